"""Turning an MQTT prompt payload into a typed request, or a clear `invalid_request`.

Nothing here trusts the payload: its size is checked before decoding, JSON nesting is
bounded, every field's type and range is checked, and unknown fields are ignored
(forward compatibility, contract.md).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from assistant import ipc
from assistant.mqtt.topics import valid_level

MAX_PAYLOAD = 256 * 1024  # bytes; checked before decoding
MAX_TEXT = 32_000  # characters of prompt (far beyond any small model's window)
MAX_SYSTEM = 4_000
MAX_DEPTH = 16  # JSON nesting a request may use
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u200e\u200f\u202a-\u202e\u2066-\u2069]")

StreamMode = Literal["off", "tokens", "sentences"]


class BadRequest(Exception):  # noqa: N818 - it is the contract's invalid_request
    """The payload is not a valid request; `request_id` is set when one could be read."""

    def __init__(self, message: str, request_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.request_id = request_id


@dataclass(frozen=True)
class AskRequest:
    id: str
    text: str
    source: str | None = None
    session: str | None = None
    system: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    priority: int = 0
    stream: StreamMode = "off"
    reply_to: str | None = None
    timeout_s: float | None = None


def printable(text: str, limit: int = 120) -> str:
    """Text safe to log: control characters and bidi overrides removed, shortened."""
    clean = _CONTROL.sub("", text)
    return clean if len(clean) <= limit else clean[: limit - 1] + "…"


def new_id() -> str:
    return uuid.uuid4().hex[:16]


def _decode(payload: bytes) -> tuple[str, dict[str, Any] | None]:
    """(text, None) for a plain-text prompt, ("", object) for a JSON request."""
    if len(payload) > MAX_PAYLOAD:
        raise BadRequest(f"payload is {len(payload):,} bytes; the limit is {MAX_PAYLOAD:,}")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as err:
        raise BadRequest(f"payload is not UTF-8 (byte {err.start})") from None
    # A payload that begins like JSON must be JSON; anything else is the prompt itself.
    if text.lstrip()[:1] not in ("{", "[", '"'):
        return text, None
    try:
        return "", ipc.decode_body(payload, max_depth=MAX_DEPTH)
    except ipc.ProtocolError as err:
        message = str(err).replace("frame body", "JSON request")
        raise BadRequest(message) from None


def _field(obj: dict[str, Any], key: str, kind: str, rid: str | None) -> Any:
    """obj[key] checked against `kind`; None when absent or null."""
    value = obj.get(key)
    if value is None:
        return None
    ok = {
        "str": isinstance(value, str),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "num": isinstance(value, int | float) and not isinstance(value, bool),
    }[kind]
    if not ok:
        names = {"str": "a string", "int": "an integer", "num": "a number"}
        raise BadRequest(f"field '{key}' must be {names[kind]}", rid)
    return value


def _check(condition: bool, message: str, rid: str | None) -> None:
    if not condition:
        raise BadRequest(message, rid)


def parse_request(payload: bytes, source: str | None = None) -> AskRequest:
    """A prompt from `{base}/ask` or `{base}/ask/{source}`."""
    text, obj = _decode(payload)
    if obj is None:
        _check(bool(text.strip()), "empty text", None)
        _check(len(text) <= MAX_TEXT, f"text is longer than {MAX_TEXT:,} characters", None)
        return AskRequest(id=new_id(), text=text, source=source, session=source)

    raw_id = obj.get("id")
    rid = raw_id if isinstance(raw_id, str) and 0 < len(raw_id) <= 64 else None
    if raw_id is not None:
        _check(rid is not None, "field 'id' must be a string of 1-64 characters", None)
        _check(rid is not None and rid.isprintable(), "field 'id' has control characters", None)
    text = _field(obj, "text", "str", rid)
    _check(text is not None and bool(text.strip()), "empty text", rid)
    _check(len(text) <= MAX_TEXT, f"text is longer than {MAX_TEXT:,} characters", rid)
    session = _field(obj, "session", "str", rid)
    _check(
        session is None or valid_level(session),
        "field 'session' must match [A-Za-z0-9_-]{1,64}",
        rid,
    )
    system = _field(obj, "system", "str", rid)
    _check(
        system is None or len(system) <= MAX_SYSTEM,
        f"field 'system' is longer than {MAX_SYSTEM:,} characters",
        rid,
    )
    max_tokens = _field(obj, "max_tokens", "int", rid)
    _check(max_tokens is None or max_tokens >= 1, "field 'max_tokens' must be at least 1", rid)
    temperature = _field(obj, "temperature", "num", rid)
    _check(
        temperature is None or 0 <= temperature <= 2,
        "field 'temperature' must be between 0 and 2",
        rid,
    )
    top_p = _field(obj, "top_p", "num", rid)
    _check(top_p is None or 0 < top_p <= 1, "field 'top_p' must be in (0, 1]", rid)
    top_k = _field(obj, "top_k", "int", rid)
    _check(top_k is None or top_k >= 0, "field 'top_k' must be at least 0", rid)
    priority = _field(obj, "priority", "int", rid)
    _check(
        priority is None or -10 <= priority <= 10,
        "field 'priority' must be between -10 and 10",
        rid,
    )
    stream = obj.get("stream", False)
    _check(
        stream in (True, False, None, "sentences"),
        "field 'stream' must be true, false or \"sentences\"",
        rid,
    )
    reply_to = _field(obj, "reply_to", "str", rid)
    timeout_s = _field(obj, "timeout_s", "num", rid)
    _check(timeout_s is None or timeout_s > 0, "field 'timeout_s' must be greater than 0", rid)
    return AskRequest(
        id=rid or new_id(),
        text=text,
        source=source,
        session=session if session is not None else source,
        system=system,
        max_tokens=max_tokens,
        temperature=None if temperature is None else float(temperature),
        top_p=None if top_p is None else float(top_p),
        top_k=top_k,
        priority=priority or 0,
        stream="sentences" if stream == "sentences" else "tokens" if stream is True else "off",
        reply_to=reply_to,
        timeout_s=None if timeout_s is None else float(timeout_s),
    )


def parse_cancel(payload: bytes) -> str:
    """The request id of a `{base}/cancel` message ("*" cancels everything)."""
    _, obj = _decode(payload)
    if obj is None:
        raise BadRequest('cancel needs a JSON object: {"id": "<request id>"}')
    rid = obj.get("id")
    if not isinstance(rid, str) or not 0 < len(rid) <= 64:
        raise BadRequest("field 'id' must be a string of 1-64 characters")
    return rid
