"""One accepted request as an HTTP reply sees it: refusals become statuses before any
byte is sent, deltas stream (holding back what may be a tool call), the final carries the
calls read from the text, and a client that goes away cancels its request.

Both APIs use it; only the shapes they write differ.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from assistant.core.api import CoreApi, Handle
from assistant.core.events import Delta, Event, Finished, Timing, ToolCall, Usage
from assistant.core.request import Request
from assistant.core.tool_calls import ToolTextFilter, parse_tool_calls
from assistant.errors import RequestError

LOG = logging.getLogger(__name__)
MAX_OPEN = 256  # requests answered at once; beyond this a client gets 503 at once
DRAIN_S = 30.0  # how long a cancelled request's final is awaited after its client left
STATUS = {
    "invalid_request": 400,
    "prompt_too_long": 400,
    "busy": 503,
    "shutting_down": 503,
    "timeout": 504,
    "engine_failure": 500,
}
_RETRY_IN = re.compile(r"retry in ([0-9.]+) s")


class RefusedError(Exception):
    """The core answered with an error (before or while streaming)."""

    def __init__(self, error: RequestError) -> None:
        super().__init__(error.message)
        self.error = error
        self.status = STATUS.get(error.code, 500)

    @property
    def retry_after_s(self) -> int | None:
        if self.error.code not in ("busy", "shutting_down"):
            return None
        found = _RETRY_IN.search(self.error.message)
        return max(1, round(float(found.group(1)) + 0.5)) if found else 1


@dataclass(frozen=True)
class Reply:
    """A request's successful end, with tool calls separated from the text."""

    text: str
    tool_calls: tuple[ToolCall, ...]
    finish_reason: str  # stop, length, cancelled, tool_calls
    usage: Usage
    timing: Timing


@dataclass
class HttpStats:
    """Counters for telemetry, info and `GET /api/edge/stats`."""

    requests_total: int = 0  # bodies that became requests for the core
    invalid_total: int = 0  # bodies refused with a 4xx before reaching the core
    refused_total: int = 0  # requests the core refused (busy, shutting down…)
    open: int = 0  # requests being answered now
    disconnects: int = 0  # clients that left before their final
    disconnect_stops: int = 0  # of those, requests whose final (cancelled) has arrived
    last_stop_at: float | None = None  # time.monotonic() of the latest such final

    def to_dict(self) -> dict[str, int | float | None]:
        return dict(self.__dict__)


@dataclass
class Relay:
    """Submits requests to the core and owns the drains of abandoned ones."""

    core: CoreApi
    stats: HttpStats = field(default_factory=HttpStats)
    _drains: set[asyncio.Task[None]] = field(default_factory=set)
    _stopped: asyncio.Condition = field(default_factory=asyncio.Condition)

    def full(self) -> bool:
        return self.stats.open >= MAX_OPEN

    async def open(self, request: Request) -> Exchange:
        """Submit and wait for the first event; raises RefusedError when that is an error."""
        self.stats.requests_total += 1
        exchange = Exchange(self, self.core.submit(request), request)
        self.stats.open += 1
        try:
            await exchange.first()
        except BaseException:
            exchange.close()
            raise
        return exchange

    def abandon(self, handle: Handle) -> None:
        """A client left before the final: stop the request and count its end."""
        self.stats.disconnects += 1
        handle.cancel()
        task = asyncio.create_task(self._drain(handle), name=f"drain-{handle.id}")
        self._drains.add(task)
        task.add_done_callback(self._drains.discard)

    async def _drain(self, handle: Handle) -> None:
        try:
            async with asyncio.timeout(DRAIN_S):
                await handle.final()
        except TimeoutError:
            LOG.warning("request %s: no final %g s after its client left", handle.id, DRAIN_S)
            return
        self.stats.disconnect_stops += 1
        self.stats.last_stop_at = time.monotonic()
        async with self._stopped:
            self._stopped.notify_all()

    async def stops_after(self, seen: int, timeout_s: float) -> None:
        """Wait (at most `timeout_s`) until more than `seen` abandoned requests ended."""
        async with self._stopped:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._stopped.wait_for(lambda: self.stats.disconnect_stops > seen),
                    timeout_s,
                )

    async def close(self) -> None:
        if self._drains:
            await asyncio.wait(set(self._drains), timeout=DRAIN_S)


class Exchange:
    """The events of one submitted request; read `deltas()` once, then `reply`."""

    def __init__(self, relay: Relay, handle: Handle, request: Request) -> None:
        self._relay = relay
        self.handle = handle
        self._tools = request.tools
        self._filter = ToolTextFilter() if request.tools else None
        self._events: AsyncIterator[Event] = handle.events()
        self._first: Event | None = None
        self._streamed = ""
        self._closed = False
        self.finished = False
        self.reply: Reply | None = None

    async def first(self) -> None:
        self._first = await anext(self._events)
        if isinstance(self._first, Finished) and self._first.error is not None:
            self.finished = True
            self._relay.stats.refused_total += 1
            raise RefusedError(self._first.error)

    async def deltas(self) -> AsyncIterator[str]:
        """Text as it may be shown; raises RefusedError for an error final; sets `reply`."""
        while True:
            event = self._first if self._first is not None else await anext(self._events)
            self._first = None
            if isinstance(event, Delta):
                shown = self._filter.push(event.text) if self._filter else event.text
                if shown:
                    self._streamed += shown
                    yield shown
                continue
            self.finished = True
            if event.result is None:
                raise RefusedError(event.error or RequestError("engine_failure", "no result"))
            result = event.result
            text, calls = result.text, result.tool_calls
            if self._tools and not calls:
                text, calls = parse_tool_calls(text, self._tools)
            if text.startswith(self._streamed) and len(text) > len(self._streamed):
                yield text[len(self._streamed) :]
            finish = "tool_calls" if calls else result.finish_reason
            self.reply = Reply(text, calls, finish, result.usage, result.timing)
            return

    def close(self) -> None:
        """Called once the HTTP reply is over, however it ended."""
        if self._closed:
            return
        self._closed = True
        self._relay.stats.open -= 1
        if not self.finished:
            self._relay.abandon(self.handle)
