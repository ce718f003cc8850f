"""Rhasspy's Hermes protocol: recognised speech in, the answer spoken out.

`hermes/asr/textCaptured` → a request (session key = `siteId`) → `hermes/tts/say` with
`{"text", "siteId", "sessionId", "id", "lang"?}` (contract.md). A failure is spoken as a
short apology, never silence.

When the text belongs to a dialogue session (it has a `sessionId`), the session is ended
with `hermes/dialogueManager/endSession` *without* text, after `hermes/tts/sayFinished`
for our `id` (or `SAY_FINISHED_TIMEOUT_S`). Not `endSession` with text: the contract
answers on `tts/say`, and both would speak twice. Waiting for `sayFinished` is what
Rhasspy's dialogue manager does around its own speech: ending the session re-enables the
wake word, which must not hear the assistant's own voice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from assistant.core.api import CoreApi
from assistant.core.sessions import session_key
from assistant.logsafe import printable
from assistant.mqtt.topics import HERMES_END_SESSION, HERMES_SAY
from assistant.voice import ask_safely, spoken_answer, voice_request

LOG = logging.getLogger(__name__)
MAX_PAYLOAD = 64 * 1024  # a transcript of a spoken sentence; checked before decoding
# Rhasspy's dialogue manager waits this long for sayFinished around its own speech.
SAY_FINISHED_TIMEOUT_S = 10.0


class HermesError(ValueError):
    """A Hermes message that is not what the protocol says."""


def _object(payload: bytes) -> dict[str, Any]:
    if len(payload) > MAX_PAYLOAD:
        raise HermesError(f"payload is {len(payload):,} bytes; the limit is {MAX_PAYLOAD:,}")
    try:
        obj = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise HermesError(f"not a JSON object: {err}") from None
    if not isinstance(obj, dict):
        raise HermesError("not a JSON object")
    return obj


def _optional_str(obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise HermesError(f"field '{key}' must be a string")
    return value or None


@dataclass(frozen=True)
class TextCaptured:
    """`hermes/asr/textCaptured` (the fields this service uses)."""

    text: str  # the transcript; may be empty when nothing was understood
    site_id: str = "default"  # the satellite that heard it; also the session key
    session_id: str | None = None  # the dialogue manager's session, if any
    lang: str | None = None

    @classmethod
    def from_payload(cls, payload: bytes) -> TextCaptured:
        obj = _object(payload)
        text = obj.get("text")
        if not isinstance(text, str):
            raise HermesError("field 'text' must be a string")
        return cls(
            text=text,
            site_id=_optional_str(obj, "siteId") or "default",
            session_id=_optional_str(obj, "sessionId"),
            lang=_optional_str(obj, "lang"),
        )


@dataclass(frozen=True)
class TtsSay:
    """`hermes/tts/say`."""

    text: str
    site_id: str
    id: str  # echoed by the TTS in `hermes/tts/sayFinished`
    session_id: str | None = None
    lang: str | None = None

    def to_payload(self) -> str:
        body: dict[str, Any] = {
            "text": self.text,
            "siteId": self.site_id,
            "sessionId": self.session_id,
            "id": self.id,
        }
        if self.lang is not None:
            body["lang"] = self.lang
        return json.dumps(body)


@dataclass(frozen=True)
class EndSession:
    """`hermes/dialogueManager/endSession` without text (see the module docstring)."""

    session_id: str

    def to_payload(self) -> str:
        return json.dumps({"sessionId": self.session_id})


def say_finished_id(payload: bytes) -> str | None:
    """The `id` of a `hermes/tts/sayFinished`, or None."""
    try:
        return _optional_str(_object(payload), "id")
    except HermesError:
        return None


class HermesVoice:
    """Answers `textCaptured` messages; one task per message, owned here."""

    def __init__(
        self,
        publish: Callable[[str, str], None],
        core: CoreApi,
        say_finished_timeout_s: float = SAY_FINISHED_TIMEOUT_S,
    ) -> None:
        self._publish = publish
        self._core = core
        self.say_finished_timeout_s = say_finished_timeout_s
        self._tasks: set[asyncio.Task[None]] = set()
        self._spoken: dict[str, asyncio.Future[None]] = {}  # tts/say ids awaiting sayFinished
        self._stopping = False

    def on_text_captured(self, payload: bytes) -> None:
        try:
            message = TextCaptured.from_payload(payload)
        except HermesError as err:
            LOG.warning("ignoring a malformed hermes/asr/textCaptured: %s", err)
            return
        task = asyncio.create_task(self._answer(message), name="hermes-answer")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def on_say_finished(self, payload: bytes) -> None:
        say_id = say_finished_id(payload)
        waiter = self._spoken.get(say_id) if say_id is not None else None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _answer(self, message: TextCaptured) -> None:
        session = session_key(message.site_id)
        request = voice_request(message.text, session, session, "hermes")
        request_id = request.id
        final = await ask_safely(self._core, request)
        text, error = spoken_answer(final)
        if error is not None:
            LOG.warning(
                "hermes request %s from site %s failed (%s: %s): speaking an apology",
                request_id,
                printable(message.site_id, 64),
                error.code,
                printable(error.message),
            )
        say = TtsSay(text, message.site_id, request_id, message.session_id, message.lang)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._spoken[request_id] = waiter
        try:
            self._publish(HERMES_SAY, say.to_payload())
            if message.session_id is None:
                return
            if not self._stopping:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter, self.say_finished_timeout_s)
            self._publish(HERMES_END_SESSION, EndSession(message.session_id).to_payload())
        finally:
            del self._spoken[request_id]

    async def stop(self, grace_s: float) -> None:
        """Let the answers in progress be spoken (their requests end with the scheduler) and
        end their dialogue sessions now instead of waiting for sayFinished."""
        self._stopping = True
        for waiter in self._spoken.values():
            if not waiter.done():
                waiter.set_result(None)
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=grace_s)
        for task in list(self._tasks):
            task.cancel()
