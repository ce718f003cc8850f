"""A loopback TCP proxy for fault tests: pass traffic, reset connections, or blackhole them.

It runs an asyncio loop in a thread of its own, so a test can flip it while the service
on the other side keeps running:

- `pass`: forward bytes both ways;
- `reset()`: end every open connection with a TCP RST (SO_LINGER 0, then close); new
  connections are accepted normally;
- `blackhole`: keep the sockets open but forward nothing (a dead link, found only by
  keepalive);
- `refuse`: new connections are reset at once (a broker that is down).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from typing import Literal

Mode = Literal["pass", "blackhole", "refuse"]
_LINGER_0 = struct.pack("ii", 1, 0)


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, listen_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.listen_host = listen_host
        self.port = 0
        self.mode: Mode = "pass"
        self.accepted = 0
        self.resets = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    # --- the test's side (any thread) ---------------------------------------------------

    def start(self) -> TcpProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        return self

    def set_mode(self, mode: Mode) -> None:
        self.mode = mode

    @property
    def open_connections(self) -> int:
        return len(self._writers) // 2

    def reset(self) -> int:
        """RST every open connection; returns how many were reset."""
        return asyncio.run_coroutine_threadsafe(self._reset_all(), self._loop).result(10)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # --- the proxy's loop ------------------------------------------------------------------

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.listen_host, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.mode == "refuse":
            _abort(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            _abort(writer)
            return
        self._writers.update((writer, up_writer))
        try:
            await asyncio.gather(
                self._pump(reader, up_writer), self._pump(up_reader, writer), return_exceptions=True
            )
        finally:
            for w in (writer, up_writer):
                self._writers.discard(w)
                _abort(w)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            if self.mode == "blackhole":
                continue  # swallowed: the peer hears nothing until keepalive gives up
            writer.write(data)
            await writer.drain()
        _abort(writer)

    async def _reset_all(self) -> int:
        writers = list(self._writers)
        for w in writers:
            _abort(w)
        self._writers.clear()
        self.resets += len(writers) // 2
        return len(writers) // 2

    async def _close(self) -> None:
        await self._reset_all()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with SO_LINGER 0, so the peer gets a RST instead of a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_0)
    writer.transport.abort()
