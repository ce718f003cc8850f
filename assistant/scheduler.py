"""Task scheduling between the service and the worker: priorities, a bounded queue,
deadlines, cancellation and per-source rate limits, on one asyncio event loop.

The scheduler hands the Supervisor at most `max_batch` requests at a time, so the
worker's batch never has a queue of its own: which request runs next is decided here, by
priority (higher first, FIFO within a priority). Every submitted task ends in exactly one
`Finished` event on its handle, whatever the worker, the caller or the clock does.

Requests are not preempted, so an urgent request would wait for a running one to finish
(seconds). Instead `reserved_slots` of the batch are kept for priority > 0: ordinary
requests fill the rest, and an urgent one starts at once, prefilled while the others decode.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace

from assistant.config import SchedulerConfig
from assistant.core.events import Delta, Event, Finished, GenerationResult, Timing, Usage
from assistant.engine.request import GenerationRequest
from assistant.errors import ErrorCode, RequestError
from assistant.ratelimit import RateLimiter
from assistant.worker.supervisor import RequestHandle, Supervisor

LOG = logging.getLogger(__name__)
MIN_PRIORITY, MAX_PRIORITY = -10, 10
URGENT_PRIORITY = 1  # tasks at or above this may use the reserved slots
RATE_BURST = 3  # requests a source may send at once before its per-minute rate applies
THROUGHPUT_WINDOW_S = 60.0  # tokens_per_s averages the tokens completed this long back
STOP_GRACE_S = 5.0  # how long stop() waits for the worker to confirm cancellations


@dataclass(frozen=True)
class Task:
    """One request as the scheduler sees it."""

    request: GenerationRequest
    source: str | None = None  # the asking device; rate limits are per source
    timeout_s: float | None = None  # per-request deadline; None: config.request_timeout_s


@dataclass(frozen=True)
class SchedulerStats:
    queue_depth: int  # tasks waiting for a slot in the worker's batch
    active: int  # tasks handed to the worker and not yet finished
    requests_total: int  # every submit_task call, refused ones included
    completed_total: int  # tasks that ended with a result (any finish_reason)
    errors_total: int  # tasks that ended with an error
    errors_by_code: dict[str, int]
    tokens_per_s: float  # completion tokens of recently finished tasks per second


class TaskHandle:
    """What a submitter holds: Deltas, then exactly one Finished."""

    def __init__(self, task: Task, priority: int, submitted_at: float) -> None:
        self.id = task.request.id
        self.task = task
        self.priority = priority
        self.submitted_at = submitted_at  # scheduler clock
        self.dispatched_at: float | None = None  # when it was handed to the worker
        self.final: Finished | None = None
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._done = asyncio.Event()
        self._streaming = False
        self._drop_deltas = False

    @property
    def finished(self) -> bool:
        return self.final is not None

    async def stream(self) -> AsyncIterator[Event]:
        """The Supervisor's Deltas, unchanged, then the final event. One reader only."""
        if self._streaming or self._drop_deltas:
            raise RuntimeError(f"task {self.id!r} is already being read")
        self._streaming = True
        while True:
            event = await self._events.get()
            yield event
            if isinstance(event, Finished):
                return

    async def result(self) -> Finished:
        """Wait for the final event; deltas are dropped unless stream() is reading them."""
        if not self._streaming:
            self._drop_deltas = True
            while not self._events.empty():
                self._events.get_nowait()
        await self._done.wait()
        assert self.final is not None
        return self.final

    def _put(self, delta: Delta) -> None:
        if not self._drop_deltas:
            self._events.put_nowait(delta)

    def _finish(self, event: Finished) -> None:
        if self.final is not None:
            raise RuntimeError(f"task {self.id!r} already has its final event")
        self.final = event
        if not self._drop_deltas:
            self._events.put_nowait(event)
        self._done.set()


@dataclass(eq=False)
class _Live:
    """A task that was accepted and has not had its final event yet."""

    handle: TaskHandle
    key: tuple[int, int, str]  # heap order: (-priority, arrival, id)
    deadline: float  # scheduler clock
    timer: asyncio.TimerHandle | None = None
    backend: RequestHandle | None = None  # set once dispatched
    text: str = ""  # handed out so far
    cancelling: bool = False  # cancel_task asked; the worker's final is on its way


class TaskScheduler:
    """Priority queue in front of one Supervisor; see the module docstring."""

    def __init__(
        self,
        backend: Supervisor,
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
        self.backend = backend
        self.config = config
        self.max_batch = max_batch
        self.request_timeout_s = config.request_timeout_s
        self._clock = clock
        self._limiter = (
            RateLimiter(config.rate_limit_per_source, RATE_BURST, clock)
            if config.rate_limit_per_source is not None
            else None
        )
        self._heap: list[tuple[int, int, str]] = []
        self._live: dict[str, _Live] = {}
        self._in_backend: set[str] = set()  # ids the Supervisor still holds
        self._pumps: set[asyncio.Task[None]] = set()
        self._arrivals = itertools.count()
        self._started = False
        self._stopping = False
        self._since = clock()
        self._requests_total = 0
        self._completed_total = 0
        self._errors: Counter[str] = Counter()
        self._recent_tokens: deque[tuple[float, int]] = deque()

    # --- public API ----------------------------------------------------------------------

    async def start(self) -> None:
        """Begin dispatching. The backend is started (and stopped) by its owner."""
        self._started = True
        self._since = self._clock()
        self._dispatch()

    def submit_task(self, task: Task, priority: int = 0) -> TaskHandle:
        """Accept a task, or finish its handle at once with `busy` (queue full, rate limit),
        `shutting_down` or `invalid_request` (id in use). Call it on the loop's thread."""
        if not MIN_PRIORITY <= priority <= MAX_PRIORITY:
            raise ValueError(f"priority must be in {MIN_PRIORITY}..{MAX_PRIORITY}, not {priority}")
        now = self._clock()
        handle = TaskHandle(task, priority, now)
        rid = handle.id
        self._requests_total += 1
        if self._stopping:
            self._refuse(handle, "shutting_down", "the service is stopping")
        elif rid in self._live or rid in self._in_backend:
            self._refuse(handle, "invalid_request", f"request id {rid!r} is already in use")
        elif len(self._heap) >= self.config.queue_size:
            self._refuse(handle, "busy", f"the queue is full ({self.config.queue_size} waiting)")
        elif self._limiter is not None and not self._limiter.allow(task.source):
            wait = self._limiter.retry_after_s(task.source)
            self._refuse(
                handle,
                "busy",
                f"rate limit for source {task.source!r}: {self._limiter.per_minute:g} requests "
                f"per minute (bursts of {RATE_BURST}); retry in {wait:.1f} s",
            )
        else:
            timeout = task.timeout_s if task.timeout_s is not None else self.request_timeout_s
            live = _Live(handle, (-priority, next(self._arrivals), rid), now + timeout)
            self._live[rid] = live
            heapq.heappush(self._heap, live.key)
            self._arm(live)
            self._dispatch()
        return handle

    def cancel_task(self, handle: TaskHandle | str) -> bool:
        """Cancel a queued task (final at once, empty text) or a running one (the worker
        stops within a token; final with the text so far). False if it already ended."""
        rid = handle if isinstance(handle, str) else handle.id
        live = self._live.get(rid)
        if live is None or live.cancelling:
            return False
        if isinstance(handle, TaskHandle) and live.handle is not handle:
            return False
        if live.backend is None:
            self._unqueue(live)
            self._end(live, Finished(rid, result=self._cancelled_result(live)))
        else:
            live.cancelling = True
            self.backend.cancel(rid)
        return True

    async def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Refuse new tasks, fail queued ones with `shutting_down`, cancel running ones in
        the worker and fail them too; every handle has its final event when this returns."""
        self._stopping = True
        for live in list(self._live.values()):
            rid = live.handle.id
            if live.backend is None:
                self._unqueue(live)
                message = "the service is stopping; the request never ran"
                self._end(live, Finished(rid, error=RequestError("shutting_down", message)))
                continue
            self.backend.cancel(rid)
            if live.cancelling:
                self._end(live, Finished(rid, result=self._cancelled_result(live)))
            else:
                message = "the service stopped while this request was running"
                self._end(live, Finished(rid, error=RequestError("shutting_down", message)))
        pumps = set(self._pumps)
        if pumps:
            # Let the worker confirm the cancellations so it is idle when its owner stops it.
            await asyncio.wait(pumps, timeout=grace_s)
        for pump in pumps:
            pump.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)

    def stats(self) -> SchedulerStats:
        now = self._clock()
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

    def _dispatch(self) -> None:
        """Hand waiting tasks to the worker, best first, while its batch has room."""
        if not self._started or self._stopping:
            return
        while self._heap:
            urgent = -self._heap[0][0] >= URGENT_PRIORITY
            limit = self.max_batch if urgent else self.max_batch - self.reserved_slots
            if self.backend.in_flight >= limit:
                return
            live = self._live[heapq.heappop(self._heap)[2]]
            handle = live.handle
            handle.dispatched_at = self._clock()
            try:
                backend = self.backend.submit(handle.task.request)
            except ValueError as err:  # the id is running there, submitted by someone else
                error = RequestError("invalid_request", str(err))
                self._end(live, Finished(handle.id, error=error))
                continue
            live.backend = backend
            self._in_backend.add(handle.id)
            pump = asyncio.create_task(self._pump(live, backend), name=f"task-{handle.id}")
            self._pumps.add(pump)
            pump.add_done_callback(self._pump_done)

    def _pump_done(self, pump: asyncio.Task[None]) -> None:
        self._pumps.discard(pump)
        if not pump.cancelled() and pump.exception() is not None:
            LOG.error("relaying %s failed", pump.get_name(), exc_info=pump.exception())

    def _unqueue(self, live: _Live) -> None:
        self._heap.remove(live.key)
        heapq.heapify(self._heap)

    async def _pump(self, live: _Live, backend: RequestHandle) -> None:
        """Relay one request's events from the Supervisor; after the scheduler has ended a
        task (timeout, stop) keep draining until the worker lets go of it."""
        rid = live.handle.id
        try:
            async for event in backend.stream():
                if self._live.get(rid) is not live:
                    continue
                if isinstance(event, Delta):
                    live.text += event.text
                    live.handle._put(event)
                else:
                    self._end(live, self._with_queue_time(live, event))
        finally:
            self._in_backend.discard(rid)
            if self._live.get(rid) is live:  # only when stop() cancelled this pump
                message = "the service stopped while this request was running"
                self._end(live, Finished(rid, error=RequestError("shutting_down", message)))
            self._dispatch()

    # --- deadlines -----------------------------------------------------------------------

    def _arm(self, live: _Live) -> None:
        delay = max(0.0, live.deadline - self._clock())
        loop = asyncio.get_running_loop()
        live.timer = loop.call_later(delay, self._on_deadline, live)

    def _on_deadline(self, live: _Live) -> None:
        rid = live.handle.id
        if self._live.get(rid) is not live:
            return
        if self._clock() < live.deadline:  # a clock other than the loop's: not yet
            self._arm(live)
            return
        timeout = live.deadline - live.handle.submitted_at
        if live.backend is None:
            self._unqueue(live)
            message = f"no reply within {timeout:g} s: the request waited in the queue"
            self._end(live, Finished(rid, error=RequestError("timeout", message)))
        elif live.cancelling:  # the caller cancelled and the worker has not confirmed yet
            self._end(live, Finished(rid, result=self._cancelled_result(live)))
        else:
            self.backend.cancel(rid)  # the worker stops within a token; the pump drains it
            message = f"no reply within {timeout:g} s: stopped while generating"
            self._end(live, Finished(rid, error=RequestError("timeout", message)))

    # --- final events --------------------------------------------------------------------

    def _end(self, live: _Live, event: Finished) -> None:
        del self._live[live.handle.id]
        if live.timer is not None:
            live.timer.cancel()
        self._record(event)
        live.handle._finish(event)

    def _refuse(self, handle: TaskHandle, code: ErrorCode, message: str) -> None:
        LOG.debug("refused %s (%s): %s", handle.id, code, message)
        event = Finished(handle.id, error=RequestError(code, message))
        self._record(event)
        handle._finish(event)

    def _record(self, event: Finished) -> None:
        if event.error is not None:
            self._errors[event.error.code] += 1
        elif event.result is not None:
            self._completed_total += 1
            tokens = event.result.usage.completion_tokens
            self._recent_tokens.append((self._clock(), tokens))

    def _queue_ms(self, live: _Live) -> float:
        dispatched = live.handle.dispatched_at
        end = dispatched if dispatched is not None else self._clock()
        return (end - live.handle.submitted_at) * 1000

    def _with_queue_time(self, live: _Live, event: Finished) -> Finished:
        """The worker times from its own arrival; add the wait in this queue, so the
        timings count from when the scheduler accepted the task."""
        if event.result is None:
            return event
        wait = self._queue_ms(live)
        timing = event.result.timing
        adjusted = Timing(
            queued_ms=round(timing.queued_ms + wait, 1),
            first_token_ms=round(timing.first_token_ms + wait, 1),
            total_ms=round(timing.total_ms + wait, 1),
            tokens_per_s=timing.tokens_per_s,
        )
        return replace(event, result=replace(event.result, timing=adjusted))

    def _cancelled_result(self, live: _Live) -> GenerationResult:
        """A cancelled result made here: queued (empty text), or the worker's is late."""
        elapsed = (self._clock() - live.handle.submitted_at) * 1000
        return GenerationResult(
            id=live.handle.id,
            text=live.text,
            finish_reason="cancelled",
            usage=Usage(0, 0),
            timing=Timing(round(self._queue_ms(live), 1), 0.0, round(elapsed, 1), 0.0),
        )
