"""Scheduling flights between the core and the worker: priorities, a bounded queue,
deadlines, cancellation, shutdown and per-source rate limits, on one asyncio event loop.

The scheduler hands the worker client (`Supervisor`) at most `max_batch` flights at a
time, so the worker's batch never has a queue of its own: which request runs next is
decided here, by priority (higher first, FIFO within a priority). Cancel, deadline and
shutdown are each decided here, once; the retry after a worker death is the worker
client's.

Running requests are not preempted, so an urgent request would wait for one to finish
(seconds). Instead `reserved_slots` of the batch are kept for priority > 0: ordinary
requests fill the rest, and an urgent one starts at once; the worker stops the step in
progress for it and prefills it before anything less urgent.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from assistant.config import SchedulerConfig
from assistant.core.flight import Flight
from assistant.errors import ErrorCode
from assistant.ratelimit import RateLimiter
from assistant.worker.supervisor import Supervisor

LOG = logging.getLogger(__name__)
MIN_PRIORITY, MAX_PRIORITY = -10, 10
URGENT_PRIORITY = 1  # tasks at or above this may use the reserved slots
RATE_BURST = 3  # requests a source may send at once before its per-minute rate applies
THROUGHPUT_WINDOW_S = 60.0  # tokens_per_s averages the tokens completed this long back
STOP_GRACE_S = 5.0  # how long stop() waits for the worker to confirm cancellations


@dataclass(frozen=True)
class SchedulerStats:
    queue_depth: int  # tasks waiting for a slot in the worker's batch
    active: int  # tasks handed to the worker and not yet finished
    requests_total: int  # every submit_task call, refused ones included
    completed_total: int  # tasks that ended with a result (any finish_reason)
    errors_total: int  # tasks that ended with an error
    errors_by_code: dict[str, int]
    tokens_per_s: float  # completion tokens of recently finished tasks per second


@dataclass(frozen=True, order=True)
class _Key:
    """Heap order: higher priority first, then arrival."""

    priority: int  # negated
    arrival: int
    id: str = field(compare=False)


class TaskScheduler:
    """Priority queue in front of one Supervisor; see the module docstring."""

    def __init__(
        self,
        worker: Supervisor,
        config: SchedulerConfig,
        max_batch: int,
        clock: Callable[[], float] = time.monotonic,
        *,
        reserved_slots: int | None = None,
    ) -> None:
        """`reserved_slots`: batch slots only priority >= URGENT_PRIORITY may take; the
        default keeps one when the batch has 4 or more."""
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if reserved_slots is None:
            reserved_slots = 1 if max_batch >= 4 else 0
        if not 0 <= reserved_slots < max_batch:
            raise ValueError("reserved_slots must be at least 0 and less than max_batch")
        self.reserved_slots = reserved_slots
        self.worker = worker
        worker.on_release = self._dispatch
        self.config = config
        self.max_batch = max_batch
        self.request_timeout_s = config.request_timeout_s
        self.clock = clock
        self._limiter = (
            RateLimiter(config.rate_limit_per_source, RATE_BURST, clock)
            if config.rate_limit_per_source is not None
            else None
        )
        self._heap: list[_Key] = []
        self._live: dict[str, Flight] = {}  # accepted, no final yet
        self._keys: dict[str, _Key] = {}  # of the queued ones
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._settled = asyncio.Event()  # set while no accepted flight is left
        self._settled.set()
        self._arrivals = itertools.count()
        self._started = False
        self._closed = False  # no new flights (shutdown has begun)
        self._stopping = False  # nothing more is dispatched
        self._since = clock()
        self._requests_total = 0
        self._completed_total = 0
        self._errors: Counter[str] = Counter()
        self._recent_tokens: deque[tuple[float, int]] = deque()

    # --- public API ----------------------------------------------------------------------

    async def start(self) -> None:
        """Begin dispatching. The worker is started (and stopped) by its owner."""
        self._started = True
        self._since = self.clock()
        self._dispatch()

    def submit_task(self, flight: Flight) -> Flight:
        """Accept a flight, or finish it at once with `busy` (queue full, rate limit),
        `shutting_down` or `invalid_request` (id in use). Call it on the loop's thread."""
        self._requests_total += 1
        flight.when_final(self._record)
        rid = flight.id
        if not MIN_PRIORITY <= flight.priority <= MAX_PRIORITY:
            message = f"priority must be between {MIN_PRIORITY} and {MAX_PRIORITY}"
            self._refuse(flight, "invalid_request", message)
        elif self._closed:
            self._refuse(flight, "shutting_down", "the service is stopping")
        elif rid in self._live or self.worker.holds(rid):
            self._refuse(flight, "invalid_request", f"request id {rid!r} is already in use")
        elif len(self._heap) >= self.config.queue_size:
            self._refuse(flight, "busy", f"the queue is full ({self.config.queue_size} waiting)")
        elif self._limiter is not None and not self._limiter.allow(flight.source):
            wait = self._limiter.retry_after_s(flight.source)
            self._refuse(
                flight,
                "busy",
                f"rate limit for source {flight.source!r}: {self._limiter.per_minute:g} "
                f"requests per minute (bursts of {RATE_BURST}); retry in {wait:.1f} s",
            )
        else:
            self._accept(flight)
        return flight

    def refuse(self, flight: Flight, code: ErrorCode, message: str) -> Flight:
        """Finish a flight that was refused before it could be queued (counted here)."""
        self._requests_total += 1
        flight.when_final(self._record)
        self._refuse(flight, code, message)
        return flight

    def cancel_task(self, target: Flight | str) -> bool:
        """The one cancel decision: a queued flight ends at once (empty text); a running
        one is stopped by the worker within a token and ends with its text so far. False
        when it already ended or a cancel is on its way."""
        flight = self._live.get(target if isinstance(target, str) else target.id)
        if flight is None or flight.cancel_requested:
            return False
        if isinstance(target, Flight) and flight is not target:
            return False
        flight.cancel_requested = True
        if flight.id in self._keys:
            self._unqueue(flight)
            flight.finish_cancelled()
        elif not self.worker.stop_generating(flight):
            flight.finish_cancelled()  # the worker did not have it: no final will come
        return True

    async def settle(self, timeout_s: float) -> bool:
        """Wait (at most `timeout_s`) until every accepted flight has its final event."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._settled.wait(), timeout_s)
        return not self._live

    def close(self) -> None:
        """Refuse new flights (`shutting_down`) while the accepted ones go on."""
        self._closed = True

    def cancel_all(self) -> int:
        return sum(self.cancel_task(flight) for flight in list(self._live.values()))

    async def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """The one shutdown decision: refuse new flights, fail queued ones with
        `shutting_down`, stop running ones in the worker and fail them too (a cancelled one
        ends cancelled); every flight has its final event when this returns."""
        self._closed = self._stopping = True
        for flight in list(self._live.values()):
            if flight.id in self._keys:
                self._unqueue(flight)
                flight.fail("shutting_down", "the service is stopping; the request never ran")
                continue
            self.worker.stop_generating(flight)
            if flight.cancel_requested:
                flight.finish_cancelled()
            else:
                flight.fail("shutting_down", "the service stopped while this request was running")
        # Let the worker confirm the cancellations so it is idle when its owner stops it.
        await self.worker.idle(grace_s)

    def stats(self) -> SchedulerStats:
        now = self.clock()
        while self._recent_tokens and self._recent_tokens[0][0] < now - THROUGHPUT_WINDOW_S:
            self._recent_tokens.popleft()
        span = min(THROUGHPUT_WINDOW_S, now - self._since)
        tokens = sum(n for _, n in self._recent_tokens)
        return SchedulerStats(
            queue_depth=len(self._heap),
            active=len(self._live) - len(self._heap),
            requests_total=self._requests_total,
            completed_total=self._completed_total,
            errors_total=sum(self._errors.values()),
            errors_by_code=dict(self._errors),
            tokens_per_s=round(tokens / span, 1) if span > 0 else 0.0,
        )

    # --- the queue -----------------------------------------------------------------------

    def _accept(self, flight: Flight) -> None:
        flight.owned_by(self.cancel_task, self._ended)
        self._live[flight.id] = flight
        self._settled.clear()
        key = _Key(-flight.priority, next(self._arrivals), flight.id)
        self._keys[flight.id] = key
        heapq.heappush(self._heap, key)
        timeout = flight.timeout_s if flight.timeout_s is not None else self.request_timeout_s
        self._arm(flight, flight.submitted_at + timeout)
        self._dispatch()

    def _dispatch(self) -> None:
        """Hand waiting flights to the worker, best first, while its batch has room."""
        if not self._started or self._stopping:
            return
        while self._heap:
            urgent = -self._heap[0].priority >= URGENT_PRIORITY
            limit = self.max_batch if urgent else self.max_batch - self.reserved_slots
            if self.worker.in_flight >= limit:
                return
            key = heapq.heappop(self._heap)
            del self._keys[key.id]
            flight = self._live[key.id]
            flight.dispatched_at = self.clock()
            self.worker.send(flight)

    def _unqueue(self, flight: Flight) -> None:
        self._heap.remove(self._keys.pop(flight.id))
        heapq.heapify(self._heap)

    # --- deadlines -----------------------------------------------------------------------

    def _arm(self, flight: Flight, deadline: float) -> None:
        delay = max(0.0, deadline - self.clock())
        loop = asyncio.get_running_loop()
        self._timers[flight.id] = loop.call_later(delay, self._on_deadline, flight, deadline)

    def _on_deadline(self, flight: Flight, deadline: float) -> None:
        """The one deadline decision."""
        if self._live.get(flight.id) is not flight:
            return
        if self.clock() < deadline:  # a clock other than the loop's: not yet
            self._arm(flight, deadline)
            return
        timeout = deadline - flight.submitted_at
        if flight.id in self._keys:
            self._unqueue(flight)
            flight.fail(
                "timeout", f"no reply within {timeout:g} s: the request waited in the queue"
            )
        elif flight.cancel_requested:  # the caller cancelled and the worker has not confirmed yet
            flight.finish_cancelled()
        else:
            self.worker.stop_generating(flight)  # within a token; the worker client drains it
            flight.fail("timeout", f"no reply within {timeout:g} s: stopped while generating")

    # --- final events --------------------------------------------------------------------

    def _ended(self, flight: Flight) -> None:
        if self._live.get(flight.id) is flight:
            del self._live[flight.id]
            if not self._live:
                self._settled.set()
        timer = self._timers.pop(flight.id, None)
        if timer is not None:
            timer.cancel()

    def _refuse(self, flight: Flight, code: ErrorCode, message: str) -> None:
        LOG.debug("refused %s (%s): %s", flight.id, code, message)
        flight.fail(code, message)

    def _record(self, flight: Flight) -> None:
        event = flight.outcome
        assert event is not None
        if event.error is not None:
            self._errors[event.error.code] += 1
        elif event.result is not None:
            self._completed_total += 1
            tokens = event.result.usage.completion_tokens
            self._recent_tokens.append((self.clock(), tokens))
