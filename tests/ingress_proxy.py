"""A stand-in for the Supervisor's ingress proxy (the Supervisor cannot run here).

Like the real one it serves the add-on under `/api/hassio_ingress/<token>/`, forwards
each request to the add-on's ingress port with `X-Ingress-Path: /api/hassio_ingress/<token>`
and streams the answer back chunk by chunk (SSE, NDJSON). Its connections to the add-on
come from `source` (the Supervisor's own address is 172.30.32.2; tests use a second
loopback address) so the add-on's ingress rule is exercised with real connections. It runs
an asyncio loop in a thread of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

import aiohttp
from aiohttp import web

TOKEN = "Zk1XbH1tdGVzdA"  # an ingress session token's shape
PREFIX = f"/api/hassio_ingress/{TOKEN}"
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class IngressProxy:
    def __init__(self, target_port: int, source: str) -> None:
        self.target = f"http://127.0.0.1:{target_port}"
        self.source = source
        self.port = 0
        self.forwarded: list[str] = []  # the paths it forwarded, in order
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        """What HA's panel opens (without the trailing slash, as a user may type it)."""
        return f"http://127.0.0.1:{self.port}{PREFIX}"

    def start(self) -> IngressProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    async def _start(self) -> None:
        connector = aiohttp.TCPConnector(local_addr=(self.source, 0), force_close=True)
        self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
        app = web.Application()
        app.router.add_route("*", PREFIX, self._forward)
        app.router.add_route("*", PREFIX + "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        path = "/" + request.match_info.get("tail", "")
        self.forwarded.append(path)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        headers["X-Ingress-Path"] = PREFIX
        body = await request.read()
        async with self._session.request(
            request.method, self.target + path, params=request.query, headers=headers, data=body
        ) as upstream:
            response = web.StreamResponse(status=upstream.status)
            for key, value in upstream.headers.items():
                if key.lower() not in HOP_BY_HOP:
                    response.headers[key] = value
            await response.prepare(request)
            # A closed browser tab ends the stream here, and so the upstream connection.
            with contextlib.suppress(ConnectionResetError):
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
            return response
