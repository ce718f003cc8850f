"""The worker program: confine itself, load the model (`startup`), then serve frames.

Runs as `python -m assistant.worker --fd N`, N being its end of a socketpair. It logs only
to stderr. One thread runs the batch; between steps it takes the frames a reader thread has queued,
so a cancel takes effect within one token and new requests join the running batch, and
an urgent request stops the step in progress (redone after its prefill).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import queue
import socket
import sys
import threading
import time
from typing import TYPE_CHECKING

from assistant import ipc
from assistant.core.events import Delta
from assistant.engine.request import GenerationRequest
from assistant.errors import RequestError
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
    decode_to_worker,
)
from assistant.worker.startup import confine_then_load

if TYPE_CHECKING:
    from assistant.engine.batch import Batch

LOG = logging.getLogger("assistant.worker")
EXIT_OK = 0
EXIT_FATAL = 1
EXIT_OUT_OF_MEMORY = 3  # the parent recycles the worker and reports engine_failure
# onnxruntime reports a failed allocation as a generic runtime error with one of these.
ALLOCATION_ERRORS = ("bad_alloc", "Failed to allocate", "failed to allocate", "out of memory")


def serve(sock: socket.socket) -> int:
    """The worker's life: start frame, sandbox + load, hello, then the request loop."""
    started = time.perf_counter()
    spec = StartSpec.from_payload(ipc.recv_frame(sock))
    engine, sandbox = confine_then_load(spec)
    from assistant.engine.batch import Batch  # noqa: PLC0415

    hello = Hello(
        pid=os.getpid(),
        model_id=engine.model_id,
        context_tokens=engine.context_tokens,
        load_ms=round((time.perf_counter() - started) * 1000, 1),
        sandbox=sandbox,
    )
    _send(sock, hello)
    batch = Batch(engine, spec.max_batch, spec.kv_budget_bytes)
    return _loop(sock, batch, spec)


def _loop(sock: socket.socket, batch: Batch, spec: StartSpec) -> int:
    inbox: Inbox = queue.SimpleQueue()
    reader = threading.Thread(target=_read, args=(sock, inbox, batch), name="reader", daemon=True)
    reader.start()
    while True:
        # Block when idle; only take what has arrived between steps when busy.
        block = not batch.busy
        while True:
            try:
                frame = inbox.get(block=block)
            except queue.Empty:
                break
            block = False
            if isinstance(frame, BaseException):
                raise frame  # the channel closed or spoke out of turn
            if isinstance(frame, ShutdownFrame):
                return EXIT_OK
            if isinstance(frame, CancelFrame):
                batch.cancel(frame.id)
            else:
                _add(sock, batch, spec, frame.request)
        batch.preemption.taken()
        if batch.busy and (code := _step(sock, batch)) is not None:
            return code


Inbox = queue.SimpleQueue[ToWorker | BaseException]


def _read(sock: socket.socket, inbox: Inbox, batch: Batch) -> None:
    """The socket's only reader, on its own thread, so frames arrive during a step: an
    urgent request stops the run in progress (`assistant.engine.preempt`), once the loop
    can find it in the inbox."""
    try:
        while True:
            frame = decode_to_worker(ipc.recv_frame(sock))
            inbox.put(frame)
            if isinstance(frame, GenerateFrame):
                batch.preempt(frame.request.priority)
    except BaseException as err:  # handed to the loop, which re-raises it
        inbox.put(err)


def _step(sock: socket.socket, batch: Batch) -> int | None:
    """One batch step, its events sent; an exit code when the worker must stop."""
    try:
        events = batch.step()
    except MemoryError:
        return _out_of_memory(sock, batch, "MemoryError")
    except Exception as err:  # onnxruntime's Fail/RuntimeException are plain Exceptions
        if any(marker in str(err) for marker in ALLOCATION_ERRORS):
            return _out_of_memory(sock, batch, str(err)[:200])
        raise  # anything else: main() reports it and exits; the parent retries once
    for event in events:
        if isinstance(event, Delta):
            _send(sock, DeltaFrame.from_event(event))
        elif event.result is not None:
            _send(sock, ResultFrame(event.result))
    return None


def _add(sock: socket.socket, batch: Batch, spec: StartSpec, request: GenerationRequest) -> None:
    if spec.debug_hang_text is not None and any(
        text == spec.debug_hang_text for _, text in request.messages
    ):
        _hang_in_native_code()
    try:
        batch.add(request)
    except RequestError as err:
        _send(sock, ErrorFrame.from_error(request.id, err))


def _send(sock: socket.socket, frame: Hello | FromWorker) -> None:
    ipc.send_frame(sock, frame.to_payload())


def _out_of_memory(sock: socket.socket, batch: Batch, detail: str) -> int:
    """Fail every request this worker holds, then exit so the parent starts a fresh one."""
    LOG.error("allocation failed (%s): failing %d request(s), exiting", detail, len(batch.ids))
    message = "the model ran out of memory on this request; the worker restarted"
    for request_id in batch.ids:
        _send(sock, ErrorFrame(request_id, "engine_failure", message))
    return EXIT_OUT_OF_MEMORY


def _hang_in_native_code() -> None:
    """Block in libc, where Python cannot interrupt: stands in for a stuck native call."""
    import ctypes  # noqa: PLC0415

    ctypes.CDLL(None).sleep(3600)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m assistant.worker")
    parser.add_argument("--fd", type=int, required=True, help="this end of the IPC socketpair")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s worker[%(process)d] %(name)s: %(message)s",
    )
    sock = socket.socket(fileno=args.fd)
    try:
        return serve(sock)
    except ipc.ChannelClosed:
        return EXIT_OK  # the parent went away: nothing left to answer
    except Exception as err:
        LOG.exception("worker failed")
        with contextlib.suppress(OSError):
            _send(sock, FatalFrame(f"{type(err).__name__}: {err}"))
        return EXIT_FATAL
