"""The one handle of a request, from submit to its one final event.

Every layer works on the same `Flight`: the core builds it, the scheduler queues and times
it, the worker client sends it and hands it the worker's text. It finishes exactly once
(`finish` ignores any later final) and then tells its owners, so "one final per request"
holds here, in one place, whatever the worker, the caller or the clock does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

from assistant.core.events import Delta, Event, Finished, GenerationResult, Timing, Usage
from assistant.engine.request import GenerationRequest
from assistant.errors import ErrorCode, RequestError


class Flight:
    """One request; implements `assistant.core.api.Handle`."""

    def __init__(
        self,
        request_id: str,
        generation: GenerationRequest | None,
        *,
        priority: int = 0,
        source: str | None = None,
        timeout_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.id = request_id
        self.generation = generation  # None for a request refused before it was built
        self.priority = priority
        self.source = source  # rate limits are per source
        self.timeout_s = timeout_s  # None: the scheduler's default
        self.clock = clock
        self.submitted_at = clock()
        self.dispatched_at: float | None = None  # when the scheduler handed it to the worker
        self.cancel_requested = False  # asked to stop; its final is on the way
        # The worker client's side: one attempt per worker that ran it.
        self.attempts = 0
        self.sent = False  # the current worker has its generate frame
        self.attempt_text = ""  # what the current attempt has generated
        self.handed_out = ""  # text given to the reader, across attempts
        self._seq = 0
        self.outcome: Finished | None = None
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._done = asyncio.Event()
        self._reading = False
        self._drop_deltas = False
        self._canceller: Callable[[Flight], bool] | None = None
        self._on_final: list[Callable[[Flight], None]] = []

    @property
    def done(self) -> bool:
        return self.outcome is not None

    # --- what the front end holds ----------------------------------------------------------

    async def events(self) -> AsyncIterator[Event]:
        """Deltas, then exactly one `Finished`. One reader only."""
        if self._reading or self._drop_deltas:
            raise RuntimeError(f"request {self.id!r} is already being read")
        self._reading = True
        while True:
            event = await self._events.get()
            yield event
            if isinstance(event, Finished):
                return

    async def final(self) -> Finished:
        """The final event; deltas are dropped unless events() is reading them."""
        if not self._reading:
            self._drop_deltas = True
            while not self._events.empty():
                self._events.get_nowait()
        await self._done.wait()
        assert self.outcome is not None
        return self.outcome

    def cancel(self) -> bool:
        """Ask the owner to stop it; False when it has already finished."""
        if self.done or self._canceller is None:
            return False
        return self._canceller(self)

    # --- what its owners use -----------------------------------------------------------------

    def owned_by(
        self, canceller: Callable[[Flight], bool], on_final: Callable[[Flight], None]
    ) -> None:
        """The scheduler takes the flight: it decides cancels and hears the final."""
        self._canceller = canceller
        self._on_final.append(on_final)

    def when_final(self, callback: Callable[[Flight], None]) -> None:
        self._on_final.append(callback)

    def hand_out(self, attempt_text: str) -> bool:
        """The current attempt's text so far: hand out what earlier attempts did not.
        False when a retry did not reproduce the text already handed out."""
        done = self.handed_out
        if not (attempt_text.startswith(done) or done.startswith(attempt_text)):
            return False
        if len(attempt_text) > len(done) and not self.done:
            self.handed_out = attempt_text
            if not self._drop_deltas:
                self._events.put_nowait(Delta(self.id, self._seq, attempt_text[len(done) :]))
            self._seq += 1
        return True

    def finish(self, event: Finished) -> bool:
        """Give the one final event; False (and nothing happens) when it already had one."""
        if self.outcome is not None:
            return False
        self.outcome = event
        if not self._drop_deltas:
            self._events.put_nowait(event)
        self._done.set()
        for callback in self._on_final:
            callback(self)
        return True

    def fail(self, code: ErrorCode, message: str) -> bool:
        return self.finish(Finished(self.id, error=RequestError(code, message)))

    def succeed(self, result: GenerationResult) -> bool:
        """The worker's result, its text what was handed out (after a retry the deltas may
        run past the last attempt's text), its timings counted from submission."""
        wait = self.queued_ms()
        timing = result.timing
        counted = Timing(
            queued_ms=round(timing.queued_ms + wait, 1),
            first_token_ms=round(timing.first_token_ms + wait, 1),
            total_ms=round(timing.total_ms + wait, 1),
            tokens_per_s=timing.tokens_per_s,
        )
        return self.finish(
            Finished(self.id, result=replace(result, text=self.handed_out, timing=counted))
        )

    def finish_cancelled(self) -> bool:
        """The cancelled result made on this side (queued, or the worker's is lost): the
        text handed out so far."""
        elapsed = (self.clock() - self.submitted_at) * 1000
        result = GenerationResult(
            id=self.id,
            text=self.handed_out,
            finish_reason="cancelled",
            usage=Usage(0, 0),
            timing=Timing(round(self.queued_ms(), 1), 0.0, round(elapsed, 1), 0.0),
        )
        return self.finish(Finished(self.id, result=result))

    def queued_ms(self) -> float:
        end = self.dispatched_at if self.dispatched_at is not None else self.clock()
        return (end - self.submitted_at) * 1000
