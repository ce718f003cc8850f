"""The worker client: the parent's side of the worker process. Start it, feed it
flights, watch it, restart it.

Every flight sent here ends in exactly one final event, whatever the worker does. A worker
death is noticed first from EOF on the IPC socket (Python 3.11's child watcher can
misreport exit codes), else from a stall deadline, after which the worker is SIGKILLed.
The retry decision lives here, once: flights a dead worker held are sent once more to the
next worker; a flight that was running when two workers died gets `engine_failure`.

A flight the scheduler already finished (deadline, shutdown) stays here until the worker
lets go of it, so the worker's batch is never over-filled; `on_release` tells the
scheduler that a slot is free.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import replace

from assistant import ipc
from assistant.core.flight import Flight
from assistant.errors import RequestError
from assistant.worker.process import WorkerProcess, WorkerStartError
from assistant.worker.protocol import (
    CancelFrame,
    DeltaFrame,
    ErrorFrame,
    FatalFrame,
    FromWorker,
    GenerateFrame,
    Hello,
    ResultFrame,
    ShutdownFrame,
    StartSpec,
    ToWorker,
)

LOG = logging.getLogger(__name__)
MAX_ATTEMPTS = 2  # one retry after a worker death


class Supervisor:
    """Owns one worker process at a time and every request sent to it."""

    def __init__(
        self,
        spec: StartSpec,
        *,
        start_timeout_s: float = 180.0,
        stall_timeout_s: float = 60.0,
        backoff_s: tuple[float, float] = (0.05, 2.0),
        log_level: str = "warning",
    ) -> None:
        self.spec = spec
        self.start_timeout_s = start_timeout_s
        self.stall_timeout_s = stall_timeout_s
        self.backoff_s = backoff_s
        self.log_level = log_level
        self.hello: Hello | None = None
        self.restarts = 0
        self.deaths = 0
        self.on_release: Callable[[], None] = lambda: None  # a batch slot became free
        self._flights: dict[str, Flight] = {}  # sent here and not yet let go by the worker
        self._idle = asyncio.Event()
        self._worker: WorkerProcess | None = None
        self._ready = asyncio.Event()
        self._stopping = False
        self._fatal: str | None = None
        self._task: asyncio.Task[None] | None = None

    # --- public API ----------------------------------------------------------------------

    async def start(self) -> Hello:
        """Start the first worker and wait for its hello (raises WorkerStartError)."""
        self._task = asyncio.create_task(self._run(), name="worker-supervisor")
        ready = asyncio.create_task(self._ready.wait())
        await asyncio.wait({ready, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            ready.cancel()
            self._task.result()  # re-raises what ended the supervisor
        assert self.hello is not None
        return self.hello

    def holds(self, request_id: str) -> bool:
        """Whether a request with this id is still in the worker's hands."""
        return request_id in self._flights

    def send(self, flight: Flight) -> None:
        """Run a flight in the worker; it always gets one final event."""
        generation = flight.generation
        if generation is None or flight.id in self._flights:
            raise ValueError(f"request id {flight.id!r} cannot be sent")
        sampling = generation.sampling
        if sampling.seed is None and not sampling.greedy:
            # A fixed seed makes a retry after a worker death reproduce the same text.
            sampling = replace(sampling, seed=random.getrandbits(32))
        # The worker prefills waiting prompts in the scheduler's priority order.
        flight.generation = replace(generation, sampling=sampling, priority=flight.priority)
        self._flights[flight.id] = flight
        self._idle.clear()
        if self._stopping:
            self._release(flight, RequestError("shutting_down", "the service is stopping"))
        elif self._fatal is not None:
            self._release(flight, RequestError("engine_failure", self._fatal))
        else:
            self._send_flight(flight)

    def stop_generating(self, flight: Flight) -> bool:
        """Tell the worker to stop a flight within a token. True when the worker's final
        follows; False when the worker does not have it (not sent yet: let go here), and
        the caller gives the final."""
        if flight.id not in self._flights:
            return False
        if flight.sent:
            return self._write(CancelFrame(flight.id))
        self._drop(flight)
        return False

    async def idle(self, timeout_s: float) -> bool:
        """Wait until the worker holds nothing (at most `timeout_s`); whether it does."""
        if self._flights:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout_s)
        return not self._flights

    @property
    def in_flight(self) -> int:
        return len(self._flights)

    @property
    def pid(self) -> int | None:
        return self._worker.pid if self._worker is not None else None

    @property
    def worker_ready(self) -> bool:
        """Whether the current worker has said hello (False while one starts up)."""
        return self.pid is not None and self.hello is not None and self.hello.pid == self.pid

    def worker_rss_mb(self) -> float | None:
        return self._worker.rss_mb() if self._worker is not None else None

    async def stop(self, grace_s: float = 5.0) -> None:
        """Let go of what is left (shutting_down), ask the worker to exit, then make sure."""
        self._stopping = True
        for flight in list(self._flights.values()):
            self._release(flight, RequestError("shutting_down", "the service is stopping"))
        if self._worker is not None:
            self._worker.write(ShutdownFrame())
            await self._worker.exit(grace_s)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._reap()

    def kill_worker(self) -> None:
        """SIGKILL the current worker (the watchdog's tool; also used by chaos tests)."""
        if self._worker is not None:
            self._worker.kill()

    # --- the worker's life ---------------------------------------------------------------

    async def _run(self) -> None:
        delay = self.backoff_s[0]
        while not self._stopping:
            worker = await self._spawn()
            if worker is not None:
                delay = self.backoff_s[0]
                watchdog = asyncio.create_task(worker.watch(self._busy, self.stall_timeout_s))
                try:
                    await self._read_until_death(worker)
                finally:
                    watchdog.cancel()
            await self._reap()
            if self._stopping or self._fatal is not None:
                return
            self.deaths += 1
            self._requeue_after_death()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.backoff_s[1])
            self.restarts += 1

    async def _spawn(self) -> WorkerProcess | None:
        """Start a worker and complete the handshake; None if it died on the way."""
        self._worker = worker = await WorkerProcess.spawn(self.log_level)
        try:
            self.hello = await worker.handshake(self.spec, self.start_timeout_s)
        except WorkerStartError as err:  # the model cannot load: no restart will help
            self._fatal = str(err)
            LOG.error("%s", self._fatal)
            for flight in list(self._flights.values()):
                self._release(flight, RequestError("engine_failure", self._fatal))
            if not self._ready.is_set():
                raise
            return None
        except (ipc.IpcError, OSError, TimeoutError) as err:
            LOG.warning("worker %s died during start-up: %s", worker.pid, err)
            return None
        LOG.info("worker %d ready in %.0f ms", self.hello.pid, self.hello.load_ms)
        self._ready.set()
        for flight in self._flights.values():
            if not flight.sent:
                self._send_flight(flight)
        return worker

    async def _read_until_death(self, worker: WorkerProcess) -> None:
        while True:
            try:
                frame = await worker.read()
            except ipc.ChannelClosed:
                return
            except (ipc.ProtocolError, OSError) as err:
                LOG.error("worker %s broke the protocol: %s", self.pid, err)
                return
            self._dispatch(frame)

    async def _reap(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            await worker.reap()

    # --- requests ------------------------------------------------------------------------

    def _busy(self) -> bool:
        return any(f.sent for f in self._flights.values())

    def _write(self, frame: ToWorker) -> bool:
        return self._worker is not None and self._worker.write(frame)

    def _send_flight(self, flight: Flight) -> None:
        if not self._ready.is_set() or self._worker is None or flight.generation is None:
            return  # sent by _spawn once a worker says hello
        if self._write(GenerateFrame(flight.generation)):
            if not self._busy():
                self._worker.last_heard = time.monotonic()  # the stall clock starts now
            flight.sent = True
            flight.attempts += 1
            flight.attempt_text = ""

    def _requeue_after_death(self) -> None:
        """The one retry decision: what a dead worker held runs once more, unless it was
        already finished, cancelled, or had its second attempt."""
        for flight in list(self._flights.values()):
            if not flight.sent:
                continue
            flight.sent = False
            if flight.done:
                self._drop(flight)
            elif flight.cancel_requested:
                flight.finish_cancelled()
                self._drop(flight)
            elif flight.attempts >= MAX_ATTEMPTS:
                message = "the worker died twice running this request"
                self._release(flight, RequestError("engine_failure", message))

    def _dispatch(self, frame: FromWorker) -> None:
        if isinstance(frame, FatalFrame):
            LOG.error("worker %s: %s", self.pid, frame.message)
            return  # it exits next: EOF ends this worker's life
        request_id = frame.result.id if isinstance(frame, ResultFrame) else frame.id
        flight = self._flights.get(request_id)
        if flight is None or not flight.sent:
            return  # a request already let go (e.g. at shutdown)
        if isinstance(frame, DeltaFrame):
            self._hand_out(flight, flight.attempt_text + frame.text)
        elif isinstance(frame, ResultFrame):
            if self._hand_out(flight, frame.result.text):
                flight.succeed(frame.result)
            self._drop(flight)
        elif isinstance(frame, ErrorFrame):
            self._release(flight, frame.to_error())

    def _hand_out(self, flight: Flight, attempt_text: str) -> bool:
        flight.attempt_text = attempt_text
        if flight.hand_out(attempt_text):
            return True
        message = "the worker restarted mid-reply and the retry did not reproduce the text"
        flight.fail("engine_failure", message)
        return False

    def _release(self, flight: Flight, error: RequestError) -> None:
        """Let go of a flight, failing it unless it already had its final."""
        flight.fail(error.code, error.message)
        self._drop(flight)

    def _drop(self, flight: Flight) -> None:
        if self._flights.get(flight.id) is flight:
            del self._flights[flight.id]
            if not self._flights:
                self._idle.set()
            self.on_release()
