"""The parent's side of the worker: start it, feed it, watch it, restart it.

Guarantee: every submitted request ends in exactly one `Finished` event on its handle,
whatever the worker does. A worker death is noticed first from EOF on the IPC socket
(Python 3.11's child watcher can misreport exit codes), else from a stall deadline, after
which the worker is SIGKILLed. Requests it held are sent once more to the next worker; a
request that was running when two workers died gets `engine_failure`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

import psutil

from assistant import ipc
from assistant.core.events import Delta, Event, Finished, GenerationResult
from assistant.engine.request import GenerationRequest
from assistant.errors import RequestError
from assistant.sandbox import worker_environment
from assistant.worker.protocol import Hello, StartSpec, generate_payload, result_from_payload

LOG = logging.getLogger(__name__)
MAX_ATTEMPTS = 2  # one retry after a worker death
WORKER_ERROR_CODES: frozenset[Any] = frozenset(
    {"prompt_too_long", "engine_failure", "invalid_request"}
)


class WorkerStartError(Exception):
    """The worker could not load the model (a fatal, non-transient failure)."""


@dataclass
class RequestHandle:
    """What a submitter holds: a queue of Delta events ending with one Finished."""

    request: GenerationRequest
    events: asyncio.Queue[Event] = field(default_factory=asyncio.Queue)
    finished: bool = False

    async def stream(self) -> AsyncIterator[Event]:
        while True:
            event = await self.events.get()
            yield event
            if isinstance(event, Finished):
                return


@dataclass
class _Flight:
    handle: RequestHandle
    attempts: int = 0
    sent: bool = False
    cancelled: bool = False
    forwarded: str = ""  # text already handed to the submitter
    attempt_text: str = ""  # text of the current attempt
    seq: int = 0


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
        self._flights: dict[str, _Flight] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._pid: int | None = None
        self._ready = asyncio.Event()
        self._stopping = False
        self._fatal: str | None = None
        self._last_activity = time.monotonic()
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

    def submit(self, request: GenerationRequest) -> RequestHandle:
        """Queue a request for the worker; the handle always receives one Finished."""
        if request.id in self._flights:
            raise ValueError(f"request id {request.id!r} is already running")
        if request.sampling.seed is None and not request.sampling.greedy:
            # A fixed seed makes a retry after a worker death reproduce the same text.
            sampling = replace(request.sampling, seed=random.getrandbits(32))
            request = replace(request, sampling=sampling)
        handle = RequestHandle(request)
        flight = _Flight(handle)
        self._flights[request.id] = flight
        if self._stopping:
            self._finish_error(flight, RequestError("shutting_down", "the service is stopping"))
        elif self._fatal is not None:
            self._finish_error(flight, RequestError("engine_failure", self._fatal))
        else:
            self._send_flight(flight)
        return handle

    def cancel(self, request_id: str) -> bool:
        """Stop a request; it finishes with finish_reason "cancelled" and its text so far."""
        flight = self._flights.get(request_id)
        if flight is None or flight.cancelled:
            return False
        flight.cancelled = True
        if not flight.sent:
            self._finish_cancelled(flight)
        else:
            self._write({"type": "cancel", "id": request_id})
        return True

    @property
    def in_flight(self) -> int:
        return len(self._flights)

    @property
    def pid(self) -> int | None:
        return self._pid

    @property
    def worker_ready(self) -> bool:
        """Whether the current worker has said hello (False while one starts up)."""
        return self._pid is not None and self.hello is not None and self.hello.pid == self._pid

    def worker_rss_mb(self) -> float | None:
        if self._pid is None:
            return None
        try:
            return round(psutil.Process(self._pid).memory_info().rss / 2**20, 1)
        except psutil.Error:
            return None

    async def stop(self, grace_s: float = 5.0) -> None:
        """Fail what is left with shutting_down, ask the worker to exit, then make sure."""
        self._stopping = True
        for flight in list(self._flights.values()):
            self._finish_error(flight, RequestError("shutting_down", "the service is stopping"))
        self._write({"type": "shutdown"})
        process = self._process
        if process is not None and process.returncode is None:
            try:
                await asyncio.wait_for(process.wait(), grace_s)
            except TimeoutError:
                process.kill()
                await process.wait()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._reap()

    def kill_worker(self) -> None:
        """SIGKILL the current worker (the watchdog's tool; also used by chaos tests)."""
        if self._process is not None and self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()

    # --- the worker's life ---------------------------------------------------------------

    async def _run(self) -> None:
        delay = self.backoff_s[0]
        watchdog = asyncio.create_task(self._watchdog())
        try:
            while not self._stopping:
                reader = await self._spawn()
                if reader is not None:
                    delay = self.backoff_s[0]
                    await self._read_until_death(reader)
                await self._reap()
                if self._stopping or self._fatal is not None:
                    return
                self.deaths += 1
                self._requeue_after_death()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.backoff_s[1])
                self.restarts += 1
        finally:
            watchdog.cancel()

    async def _spawn(self) -> asyncio.StreamReader | None:
        """Start a worker and complete the handshake; None if it died on the way."""
        parent_sock, child_sock = socket.socketpair()
        try:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "assistant.worker",
                "--fd",
                str(child_sock.fileno()),
                "--log-level",
                self.log_level,
                pass_fds=(child_sock.fileno(),),
                env=worker_environment(None),
                stdin=asyncio.subprocess.DEVNULL,
                close_fds=True,
            )
        finally:
            child_sock.close()
        self._pid = self._process.pid
        reader, writer = await asyncio.open_unix_connection(sock=parent_sock)
        self._writer = writer
        try:
            await ipc.write_frame(writer, self.spec.to_payload())
            frame = await asyncio.wait_for(ipc.read_frame(reader), self.start_timeout_s)
        except (ipc.IpcError, OSError, TimeoutError) as err:
            LOG.warning("worker %s died during start-up: %s", self._pid, err)
            return None
        if frame.get("type") == "fatal":
            self._fatal = f"the worker cannot start: {str(frame.get('message'))[:300]}"
            LOG.error("%s", self._fatal)
            for flight in list(self._flights.values()):
                self._finish_error(flight, RequestError("engine_failure", self._fatal))
            if not self._ready.is_set():
                raise WorkerStartError(self._fatal)
            return None
        try:
            self.hello = Hello.from_payload(frame)
        except ipc.ProtocolError as err:
            LOG.error("worker %s sent a bad hello: %s", self._pid, err)
            return None
        LOG.info("worker %d ready in %.0f ms", self.hello.pid, self.hello.load_ms)
        self._ready.set()
        self._last_activity = time.monotonic()
        for flight in self._flights.values():
            if not flight.sent:
                self._send_flight(flight)
        return reader

    async def _read_until_death(self, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                frame = await ipc.read_frame(reader)
            except ipc.ChannelClosed:
                return
            except (ipc.ProtocolError, OSError) as err:
                LOG.error("worker %s broke the protocol: %s", self._pid, err)
                return
            self._last_activity = time.monotonic()
            try:
                self._dispatch(frame)
            except ipc.ProtocolError as err:
                LOG.error("worker %s sent a bad message: %s", self._pid, err)
                return

    async def _reap(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, ipc.IpcError):
                await writer.wait_closed()
        process = self._process
        if process is None:
            return
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        with contextlib.suppress(ProcessLookupError):
            await process.wait()
        self._process = None
        self._pid = None

    async def _watchdog(self) -> None:
        """SIGKILL a worker that holds requests but has said nothing for too long (e.g.
        stuck in a native call)."""
        while True:
            await asyncio.sleep(min(0.5, self.stall_timeout_s / 4))
            busy = any(f.sent for f in self._flights.values())
            idle_for = time.monotonic() - self._last_activity
            if busy and idle_for > self.stall_timeout_s and self._process is not None:
                LOG.error("worker %s silent for %.1f s: killing it", self._pid, idle_for)
                self.kill_worker()
                self._last_activity = time.monotonic()

    # --- requests ------------------------------------------------------------------------

    def _write(self, frame: dict[str, Any]) -> bool:
        if self._writer is None or self._writer.is_closing():
            return False
        try:
            self._writer.write(ipc.encode_frame(frame))
        except (OSError, ipc.IpcError):
            return False
        return True

    def _send_flight(self, flight: _Flight) -> None:
        if not self._ready.is_set() or self._writer is None:
            return  # sent by _spawn once a worker says hello
        if self._write(generate_payload(flight.handle.request)):
            if not any(f.sent for f in self._flights.values()):
                self._last_activity = time.monotonic()
            flight.sent = True
            flight.attempts += 1
            flight.attempt_text = ""

    def _requeue_after_death(self) -> None:
        for flight in list(self._flights.values()):
            if not flight.sent:
                continue
            flight.sent = False
            if flight.cancelled:
                self._finish_cancelled(flight)
            elif flight.attempts >= MAX_ATTEMPTS:
                self._finish_error(
                    flight,
                    RequestError("engine_failure", "the worker died twice running this request"),
                )

    def _dispatch(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        flight = self._flights.get(str(frame.get("id")))
        if flight is None or not flight.sent:
            return  # a request already finished (e.g. cancelled at shutdown)
        if kind == "delta":
            text = frame.get("text")
            if not isinstance(text, str):
                raise ipc.ProtocolError("delta without text")
            self._forward(flight, flight.attempt_text + text)
        elif kind == "result":
            result = result_from_payload(frame)
            self._forward(flight, result.text)
            if not flight.handle.finished:
                # After a retry the deltas handed out may run past this attempt's text
                # (e.g. it was cancelled sooner): the reply text is what was handed out.
                result = replace(result, text=flight.forwarded)
                self._finish(flight, Finished(result.id, result=result))
        elif kind == "error":
            code, message = frame.get("code"), str(frame.get("message", ""))[:500]
            if code == "prompt_too_long":
                error = RequestError("prompt_too_long", message)
            elif code == "invalid_request":
                error = RequestError("invalid_request", message)
            else:
                error = RequestError("engine_failure", message or "the worker failed")
            self._finish_error(flight, error)

    def _forward(self, flight: _Flight, attempt_text: str) -> None:
        """Hand out text beyond what earlier attempts already handed out."""
        flight.attempt_text = attempt_text
        done = flight.forwarded
        if not (attempt_text.startswith(done) or done.startswith(attempt_text)):
            message = "the worker restarted mid-reply and the retry did not reproduce the text"
            self._finish_error(flight, RequestError("engine_failure", message))
            return
        if len(attempt_text) > len(done):
            new = attempt_text[len(done) :]
            flight.forwarded = attempt_text
            flight.handle.events.put_nowait(Delta(flight.handle.request.id, flight.seq, new))
            flight.seq += 1

    def _finish(self, flight: _Flight, event: Finished) -> None:
        if flight.handle.finished:
            return
        flight.handle.finished = True
        self._flights.pop(flight.handle.request.id, None)
        flight.handle.events.put_nowait(event)

    def _finish_error(self, flight: _Flight, error: RequestError) -> None:
        self._finish(flight, Finished(flight.handle.request.id, error=error))

    def _finish_cancelled(self, flight: _Flight) -> None:
        from assistant.core.events import Timing, Usage  # noqa: PLC0415

        result = GenerationResult(
            id=flight.handle.request.id,
            text=flight.forwarded,
            finish_reason="cancelled",
            usage=Usage(0, 0),
            timing=Timing(0.0, 0.0, 0.0, 0.0),
        )
        self._finish(flight, Finished(result.id, result=result))
