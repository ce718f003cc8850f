"""One worker process and its end of the IPC channel: start it, talk to it, reap it.

The worker client (`Supervisor`) decides what to send and when to start another; this
module only knows how a worker is started (`python -m assistant.worker --fd N`, with the
sandbox's environment) and how its frames travel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
import time
from collections.abc import Callable

import psutil

from assistant import ipc
from assistant.sandbox import worker_environment
from assistant.worker.protocol import (
    FatalFrame,
    FromWorker,
    Hello,
    StartSpec,
    ToWorker,
    decode_from_worker,
    decode_startup_reply,
)

LOG = logging.getLogger(__name__)


class WorkerStartError(Exception):
    """The worker could not load the model (a fatal, non-transient failure)."""


class WorkerProcess:
    def __init__(
        self,
        process: asyncio.subprocess.Process,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.process = process
        self.pid = process.pid
        self.reader = reader
        self.last_heard = time.monotonic()  # when it last sent a frame
        self._writer: asyncio.StreamWriter | None = writer

    @classmethod
    async def spawn(cls, log_level: str) -> WorkerProcess:
        """Start a worker on a fresh socketpair; it waits for its start frame."""
        parent_sock, child_sock = socket.socketpair()
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "assistant.worker",
                "--fd",
                str(child_sock.fileno()),
                "--log-level",
                log_level,
                pass_fds=(child_sock.fileno(),),
                env=worker_environment(None),
                stdin=asyncio.subprocess.DEVNULL,
                close_fds=True,
            )
        finally:
            child_sock.close()
        reader, writer = await asyncio.open_unix_connection(sock=parent_sock)
        return cls(process, reader, writer)

    async def handshake(self, spec: StartSpec, timeout_s: float) -> Hello:
        """Send the start frame and read the worker's hello. WorkerStartError when it
        reports it cannot start; IpcError, OSError or TimeoutError when it died."""
        assert self._writer is not None
        await ipc.write_frame(self._writer, spec.to_payload())
        payload = await asyncio.wait_for(ipc.read_frame(self.reader), timeout_s)
        frame = decode_startup_reply(payload)
        if isinstance(frame, FatalFrame):
            raise WorkerStartError(f"the worker cannot start: {frame.message[:300]}")
        self.last_heard = time.monotonic()
        return frame

    async def read(self) -> FromWorker:
        """The next frame, decoded and validated (ProtocolError when it is not valid)."""
        payload = await ipc.read_frame(self.reader)
        self.last_heard = time.monotonic()
        return decode_from_worker(payload)

    async def watch(self, busy: Callable[[], bool], stall_s: float) -> None:
        """SIGKILL the worker when it holds requests but has said nothing for `stall_s`
        (e.g. stuck in a native call); its death is then noticed on read."""
        while self.process.returncode is None:
            await asyncio.sleep(min(0.5, stall_s / 4))
            quiet_s = time.monotonic() - self.last_heard
            if busy() and quiet_s > stall_s:
                LOG.error("worker %s silent for %.1f s: killing it", self.pid, quiet_s)
                self.kill()
                return

    def write(self, frame: ToWorker) -> bool:
        """Queue a frame; False when the channel is gone (the death is noticed on read)."""
        if self._writer is None or self._writer.is_closing():
            return False
        try:
            self._writer.write(ipc.encode_frame(frame.to_payload()))
        except (OSError, ipc.IpcError):
            return False
        return True

    def kill(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()

    async def exit(self, grace_s: float) -> None:
        """Wait up to `grace_s` for the worker to exit on its own, then kill it."""
        if self.process.returncode is None:
            try:
                await asyncio.wait_for(self.process.wait(), grace_s)
            except TimeoutError:
                self.kill()

    async def reap(self) -> None:
        """Close the channel, kill the process if it still runs, collect its status."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, ipc.IpcError):
                await writer.wait_closed()
        self.kill()
        with contextlib.suppress(ProcessLookupError):
            await self.process.wait()

    def rss_mb(self) -> float | None:
        try:
            return round(psutil.Process(self.pid).memory_info().rss / 2**20, 1)
        except psutil.Error:
            return None
