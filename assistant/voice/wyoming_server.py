"""A Wyoming "handle" service: Home Assistant's `wyoming` integration makes it a
conversation agent for Assist.

`describe` → `info` listing one handle program; `transcript` → a request → `handled`
with the reply, or `not-handled` with an apology and the error. Runs on the service's
event loop.

The session key is the transcript's `context.conversation_id`. Home Assistant puts one
there since 2025.7 (its pinned wyoming 1.7 sends the context; 2025.6 and older pin 1.5.4,
whose transcript carries only the text). Without one the request has no history: each
request comes on a fresh connection from the same Home Assistant, and nothing tells two
speakers' conversations apart, so any guess would mix them.
"""

from __future__ import annotations

import asyncio
import logging
import time
import warnings
from typing import Any

from assistant.core.api import CoreApi
from assistant.core.sessions import session_key
from assistant.logsafe import printable
from assistant.voice import ask_safely, spoken_answer, voice_request

with warnings.catch_warnings():
    # wyoming.info imports wyoming.audio, which imports audioop: deprecated since Python
    # 3.11 (the package falls back to its own copy on 3.13). Not ours to fix.
    warnings.filterwarnings("ignore", "'audioop' is deprecated", DeprecationWarning)
    from wyoming.asr import Transcript
    from wyoming.event import Event
    from wyoming.handle import Handled, NotHandled
    from wyoming.info import Attribution, Describe, HandleModel, HandleProgram, Info
    from wyoming.server import AsyncEventHandler, AsyncTcpServer

LOG = logging.getLogger(__name__)
PROJECT_URL = "https://github.com/edge-assistant/edge-assistant"
SOURCE = "wyoming"  # the rate-limit source of every Wyoming request


def describe(version: str, model_id: str, languages: tuple[str, ...]) -> Info:
    """The `info` answer: one installed handle program with the running model, announced
    for `languages` (Home Assistant offers the agent only for the languages listed)."""
    attribution = Attribution(name="Edge Assistant", url=PROJECT_URL)
    model = HandleModel(
        name=model_id,
        attribution=attribution,
        installed=True,
        description="the language model answering on this machine",
        version=None,
        languages=list(languages),
    )
    program = HandleProgram(
        name="edge-assistant",
        attribution=attribution,
        installed=True,
        description="Edge Assistant: a local language model on this machine's CPU",
        version=version,
        models=[model],
    )
    return Info(handle=[program])


def conversation_key(context: Any) -> str | None:
    """The session key of a transcript's context, if it names a conversation."""
    if isinstance(context, dict):
        conversation = context.get("conversation_id")
        if isinstance(conversation, str) and conversation:
            return session_key(conversation)
    return None


class _Handler(AsyncEventHandler):
    """One client connection: answers its events in order."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        info: Info,
        core: CoreApi,
    ) -> None:
        super().__init__(reader, writer)
        self._info = info
        self._core = core
        self.busy = False  # between a transcript and its answer

    async def handle_event(self, event: Event) -> bool:
        if Describe.is_type(event.type):
            await self.write_event(self._info.event())
        elif Transcript.is_type(event.type):
            self.busy = True
            try:
                await self.write_event(await self._transcript(event))
            finally:
                self.busy = False
        else:
            LOG.debug("wyoming: ignoring a %r event", printable(event.type, 40))
        return True

    async def _transcript(self, event: Event) -> Event:
        data = event.data or {}
        text, context = data.get("text"), data.get("context")
        if not isinstance(text, str):
            return NotHandled(text="The transcript has no text.", context=context).event()
        request = voice_request(text, conversation_key(context), SOURCE, "wyoming")
        request_id = request.id
        final = await ask_safely(self._core, request)
        spoken, error = spoken_answer(final)
        if error is None:
            return Handled(text=spoken, context=context).event()
        LOG.warning(
            "wyoming request %s failed (%s: %s)",
            request_id,
            error.code,
            printable(error.message),
        )
        return NotHandled(text=f"{spoken} ({error.message})", context=context).event()


class HandleServer(AsyncTcpServer):
    """The TCP server; `stop_listening()` refuses new clients while answers finish."""

    def __init__(self, host: str, port: int, core: CoreApi, info: Info) -> None:
        super().__init__(host, port)
        self._core = core
        self._info = info

    async def open(self) -> int:
        """Start listening; the bound port (useful when `port` was 0)."""
        await self.start(lambda reader, writer: _Handler(reader, writer, self._info, self._core))
        assert isinstance(self._server, asyncio.Server)
        self.port = int(self._server.sockets[0].getsockname()[1])
        LOG.info("wyoming handle service listening on %s:%d", self.host, self.port)
        return self.port

    def stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()

    async def close(self, grace_s: float) -> None:
        """Wait up to `grace_s` for the answers in progress, then drop every client."""
        self.stop_listening()
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(
            isinstance(h, _Handler) and h.busy for h in self._handlers.values()
        ):
            await asyncio.sleep(0.02)
        await self.stop()
