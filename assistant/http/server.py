"""The HTTP server: routes of both APIs, the bearer token, limits, start and stop.

Limits: a body over `BODY_LIMIT` gets 413; a body must arrive within `BODY_READ_S`; a
connection that does not finish its request headers within `IDLE_S` (slow-loris) or sits
idle that long between requests is closed; at most `MAX_OPEN` requests are answered at
once. A client that disconnects cancels its handler (aiohttp's handler cancellation), and
the relay then cancels its request in the core.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from assistant.config import HttpConfig
from assistant.core.api import CoreApi
from assistant.http.body import BodyError
from assistant.http.models import ModelCard
from assistant.http.ollama_api import OllamaApi, ollama_error
from assistant.http.openai_api import OpenAiApi, openai_error
from assistant.http.relay import HttpStats, Relay
from assistant.http.wire import BODY_LIMIT

LOG = logging.getLogger(__name__)
IDLE_S = 10.0  # headers must be complete, and idle keep-alive connections end, by then
SHUTDOWN_S = 5.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(request: web.Request, status: int, message: str) -> web.Response:
    """An error in the shape of the API the path belongs to."""
    if request.path.startswith("/v1/"):
        return openai_error(status, message)
    return ollama_error(status, message)


class HttpServer:
    def __init__(self, config: HttpConfig, core: CoreApi, card: ModelCard, version: str) -> None:
        self.config = config
        self.relay = Relay(core)
        self.card = card
        self._runner: web.AppRunner | None = None
        self.port = config.port  # the bound port once open (config port 0: any free one)
        self.app = web.Application(client_max_size=BODY_LIMIT, middlewares=[self._guard])
        self.app.add_routes(OllamaApi(self.relay, card, version).routes())
        self.app.add_routes(OpenAiApi(self.relay, card).routes())
        self.app.router.add_get("/", self._root)

    @property
    def stats(self) -> HttpStats:
        return self.relay.stats

    async def _root(self, _request: web.Request) -> web.Response:
        return web.Response(text="Ollama is running")  # what Ollama answers; clients probe it

    def _authorised(self, request: web.Request) -> bool:
        key = self.config.api_key
        if key is None:
            return True
        given = request.headers.get("Authorization", "")
        scheme, _, token = given.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip(), key)

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Token check, and every failure answered in the API's own error shape."""
        if request.path != "/" and not self._authorised(request):
            self.stats.invalid_total += 1
            response = _error(request, 401, "a valid API key is required (Bearer token)")
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
        try:
            return await handler(request)
        except BodyError as err:
            self.stats.invalid_total += 1
            return _error(request, err.status, err.message)
        except web.HTTPException as err:
            if err.status >= 400:
                self.stats.invalid_total += 1
                return _error(
                    request,
                    err.status,
                    err.reason
                    if err.status != 413
                    else f"the body is larger than {BODY_LIMIT:,} bytes",
                )
            raise

    async def open(self) -> None:
        """Listen; raises OSError when the address is taken."""
        runner = web.AppRunner(
            self.app,
            handler_cancellation=True,  # a client that leaves cancels its handler
            keepalive_timeout=IDLE_S,
            access_log=None,
        )
        await runner.setup()
        site = web.TCPSite(runner, self.config.host, self.config.port, shutdown_timeout=SHUTDOWN_S)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        addresses = runner.addresses  # the bound port, also when the config asked for 0
        if addresses:
            self.port = int(addresses[0][1])
        LOG.info("HTTP API (Ollama /api, OpenAI /v1) on %s:%d", self.config.host, self.port)

    async def close(self) -> None:
        """Stop listening; answers in progress end (their requests are cancelled)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.relay.close()
