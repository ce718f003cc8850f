"""The page's plots: one telemetry sample a second from the same payload builder MQTT
uses, the last hour kept in memory, fanned out to every open page."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

LOG = logging.getLogger(__name__)
KEEP_S = 3600  # "the last hour"
PERIOD_S = 1.0  # the page updates within a second
SUBSCRIBER_BACKLOG = 30  # points a slow page may lag before it misses some (bounded)

# Plotted fields, in the order the page draws them.
SERIES = (
    "cpu_percent",
    "memory_used_mb",
    "worker_rss_mb",
    "tokens_per_s",
    "queue_depth",
    "cpu_temp_c",
)

Point = dict[str, float | None]


def point_from_telemetry(payload: dict[str, Any], at: float) -> Point:
    """One plot point out of a telemetry payload (contract.md "Telemetry fields")."""
    memory = payload.get("memory") or {}
    total, available = memory.get("total_mb"), memory.get("available_mb")
    used = total - available if total is not None and available is not None else None
    row: Point = {"t": round(at, 3), "memory_used_mb": used}
    for key in SERIES:
        if key != "memory_used_mb":
            value = payload.get(key)
            row[key] = float(value) if isinstance(value, int | float) else None
    return row


class History:
    """A ring of the last hour's points and the live subscribers (SSE streams)."""

    def __init__(
        self,
        sample: Callable[[], dict[str, Any]],
        *,
        period_s: float = PERIOD_S,
        keep_s: float = KEEP_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._sample = sample
        self.period_s = period_s
        self._clock = clock
        self._points: deque[Point] = deque(maxlen=max(1, int(keep_s / period_s)))
        self._subscribers: set[asyncio.Queue[Point | None]] = set()
        self.latest: dict[str, Any] = {}

    def take(self) -> Point:
        """Sample now: keep the point and hand it to every subscriber."""
        self.latest = self._sample()
        point = point_from_telemetry(self.latest, self._clock())
        self._points.append(point)
        for queue in self._subscribers:
            with contextlib.suppress(asyncio.QueueFull):  # a stalled page skips points
                queue.put_nowait(point)
        return point

    async def run(self) -> None:
        while True:
            try:
                self.take()
            except Exception:  # a probe failing once must not end the plots
                LOG.exception("page telemetry sample failed")
            await asyncio.sleep(self.period_s)

    def columns(self) -> dict[str, list[float | None]]:
        """The kept hour as columns (uPlot's data layout): t, then each series."""
        return {key: [p.get(key) for p in self._points] for key in ("t", *SERIES)}

    @contextlib.contextmanager
    def subscribe(self) -> Iterator[asyncio.Queue[Point | None]]:
        """Points as they are taken; None when the server is closing."""
        queue: asyncio.Queue[Point | None] = asyncio.Queue(maxsize=SUBSCRIBER_BACKLOG)
        self._subscribers.add(queue)
        try:
            yield queue
        finally:
            self._subscribers.discard(queue)

    def close(self) -> None:
        """End every subscription (each gets None next)."""
        for queue in self._subscribers:
            while not queue.empty():
                queue.get_nowait()
            queue.put_nowait(None)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)
