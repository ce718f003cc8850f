"""The page's HTTP server: an aiohttp app on a listener of its own.

In the add-on it listens on the ingress port and answers only the Supervisor's ingress
proxy (HA's login guards ingress, so there is no authentication of our own). Outside HA
`edge-assistant serve` binds it to `web.host` (localhost by default). Every endpoint reads,
except the try-it request and its cancel: nothing here changes configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from assistant.config import WebConfig
from assistant.core.api import CoreApi
from assistant.supervisor_api import TOKEN_ENV
from assistant.web.history import History
from assistant.web.requests_log import RequestLog
from assistant.web.tryit import TryIt

LOG = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
INGRESS_PEER = "172.30.32.2"  # the Supervisor's ingress proxy, the only allowed client
# Test-only: the address the add-on-mode rule allows (tests cannot own 172.30.32.2).
INGRESS_PEER_ENV = "EDGE_ASSISTANT_INGRESS_PEER"
# What HA sends in X-Ingress-Path: /api/hassio_ingress/<token>. Anything else is ignored.
INGRESS_PATH = re.compile(r"^/[A-Za-z0-9_\-./]{1,200}$")
BODY_LIMIT = 16 * 1024  # the try-it body is the only one accepted
SHUTDOWN_S = 2.0
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'self'; base-uri 'self'"
)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class PageSources:
    """What the page shows, from the service: the core, the plots' history, the recent
    requests and a description (plan, doctor, sandbox, models) fixed at start."""

    core: CoreApi
    history: History
    requests: RequestLog
    describe: Callable[[], dict[str, Any]]


@dataclass(frozen=True)
class Listener:
    host: str
    port: int
    only_peer: str | None  # None: any client that can reach host:port


def listener_for(config: WebConfig, env: Mapping[str, str]) -> Listener:
    """In an add-on (the Supervisor's token is set): every interface of the container, the
    ingress proxy only. Elsewhere: the configured address, any client."""
    if env.get(TOKEN_ENV):
        return Listener("0.0.0.0", config.port, env.get(INGRESS_PEER_ENV) or INGRESS_PEER)
    return Listener(config.host, config.port, None)


def _peer_filter(only: str | None) -> Any:
    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if only is not None and request.remote != only:
            LOG.debug("page: refused a connection from %s", request.remote)
            raise web.HTTPForbidden(text="only Home Assistant's ingress may open this page")
        return await handler(request)

    return check


@web.middleware
async def _headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as err:
        response = err
    # Model output never runs as code: the page uses textContent, and the CSP forbids
    # inline and foreign scripts as a second line.
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    if isinstance(response, web.HTTPException) and response.status >= 400:
        raise response
    return response


def _index(template: str) -> Handler:
    async def index(request: web.Request) -> web.Response:
        # Every URL the page builds is relative; the base makes them resolve under
        # ingress even when HA opens the panel without a trailing slash.
        prefix = request.headers.get("X-Ingress-Path", "")
        base = (
            f'<base href="{html.escape(prefix.rstrip("/") + "/")}">'
            if INGRESS_PATH.match(prefix)
            else ""
        )
        page = template.replace("<!--base-->", base)
        headers = {"Cache-Control": "no-store"}
        return web.Response(text=page, content_type="text/html", headers=headers)

    return index


def _events(history: History) -> Handler:
    async def events(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
        )
        await response.prepare(request)
        with history.subscribe() as queue, contextlib.suppress(ConnectionResetError):
            # Ends when the page goes away (cancelled, or the write fails) or the server
            # stops (None).
            while (point := await queue.get()) is not None:
                await response.write(b"data: " + json.dumps(point).encode() + b"\n\n")
        return response

    return events


def make_app(sources: PageSources, only_peer: str | None) -> web.Application:
    app = web.Application(
        middlewares=[_peer_filter(only_peer), _headers], client_max_size=BODY_LIMIT
    )
    tryit = TryIt(sources.core)
    template = (STATIC / "index.html").read_text(encoding="utf-8")

    async def info(_: web.Request) -> web.Response:
        return web.json_response(sources.describe())

    async def history(_: web.Request) -> web.Response:
        return web.json_response(sources.history.columns())

    async def requests(_: web.Request) -> web.Response:
        log = sources.requests
        return web.json_response({"keep_prompts": log.keep_prompts, "requests": log.entries()})

    app.router.add_get("/", _index(template))
    app.router.add_get("/api/info", info)
    app.router.add_get("/api/history", history)
    app.router.add_get("/api/requests", requests)
    app.router.add_get("/api/events", _events(sources.history))
    app.router.add_post("/api/try", tryit.start)
    app.router.add_post("/api/try/{id}/cancel", tryit.cancel)
    app.router.add_static("/static", STATIC, follow_symlinks=False)
    return app


class PageServer:
    """The listener's life cycle; `port` is the bound port (useful with port 0)."""

    def __init__(self, sources: PageSources, listener: Listener) -> None:
        self.sources = sources
        self.listener = listener
        self._runner: web.AppRunner | None = None
        self._sampler: asyncio.Task[None] | None = None
        self.port = listener.port

    async def start(self) -> None:
        """Bind (OSError when the port is taken) and start sampling."""
        app = make_app(self.sources, self.listener.only_peer)
        # handler_cancellation: a page that goes away cancels its handler at once (and so
        # its try-it request), not only at the next write.
        runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=SHUTDOWN_S, handler_cancellation=True
        )
        await runner.setup()
        site = web.TCPSite(runner, self.listener.host, self.listener.port)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        self._sampler = asyncio.create_task(self.sources.history.run(), name="page-sampler")

    async def stop(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
        self.sources.history.close()
        if self._runner is not None:
            await self._runner.cleanup()
