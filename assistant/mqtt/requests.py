"""An MQTT prompt payload as the core's `Request` (plus how to answer it), or a clear
`invalid_request`.

Nothing here trusts the payload: its size is checked before decoding, JSON nesting is
bounded, every field's type and range is checked, and unknown fields are ignored
(forward compatibility, contract.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from assistant.core.prompt import MAX_TEXT  # checked here too, to answer with the id
from assistant.core.request import Request, Sampling, new_id
from assistant.mqtt.tool_fields import ToolFieldError, parse_tool_fields
from assistant.mqtt.topics import valid_level

MAX_PAYLOAD = 256 * 1024  # bytes; checked before decoding
MAX_SYSTEM = 4_000
MAX_DEPTH = 16  # JSON nesting a request may use

StreamMode = Literal["off", "tokens", "sentences"]


class BadRequest(Exception):  # noqa: N818 - it is the contract's invalid_request
    """The payload is not a valid request; `request_id` is set when one could be read."""

    def __init__(self, message: str, request_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.request_id = request_id


@dataclass(frozen=True)
class AskMessage:
    """One prompt from `{base}/ask[/{source}]`: the request, and how to answer it."""

    request: Request
    stream: StreamMode = "off"
    reply_to: str | None = None
    # The final reply is published retained, so an asker that subscribes late (Home
    # Assistant's blueprint) still gets it; it must name a reply topic of its own.
    retain: bool = False


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _depth(value: Any) -> int:
    """How deeply arrays and objects nest in a parsed value (iterative: no recursion)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in item)
    return deepest


def decode(payload: bytes) -> tuple[str, dict[str, Any] | None]:
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
        obj = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise BadRequest(f"JSON request nests deeper than {MAX_DEPTH} levels") from None
    except ValueError as err:  # JSONDecodeError is a ValueError
        raise BadRequest(f"JSON request is not valid JSON: {err}") from None
    if not isinstance(obj, dict):
        raise BadRequest(f"JSON request must be an object, not {type(obj).__name__}")
    if _depth(obj) > MAX_DEPTH:
        raise BadRequest(f"JSON request nests deeper than {MAX_DEPTH} levels")
    return "", obj


_KINDS = {"str": "a string", "int": "an integer", "num": "a number", "bool": "true or false"}


def _field(obj: dict[str, Any], key: str, kind: str, rid: str | None) -> Any:
    """obj[key] checked against `kind`; None when absent or null."""
    value = obj.get(key)
    if value is None:
        return None
    number = isinstance(value, int | float) and not isinstance(value, bool)
    ok = {
        "str": isinstance(value, str),
        "int": number and isinstance(value, int),
        "num": number,
        "bool": isinstance(value, bool),
    }[kind]
    if not ok:
        raise BadRequest(f"field '{key}' must be {_KINDS[kind]}", rid)
    return float(value) if kind == "num" else value


def _check(condition: bool, message: str, rid: str | None) -> None:
    if not condition:
        raise BadRequest(message, rid)


def _request_id(obj: dict[str, Any]) -> str | None:
    raw = obj.get("id")
    if raw is None:
        return None
    valid = isinstance(raw, str) and 0 < len(raw) <= 64
    _check(valid, "field 'id' must be a string of 1-64 characters", None)
    _check(str(raw).isprintable(), "field 'id' has control characters", None)
    return str(raw)


def _text(value: Any, rid: str | None) -> str:
    _check(value is not None and bool(value.strip()), "empty text", rid)
    _check(len(value) <= MAX_TEXT, f"text is longer than {MAX_TEXT:,} characters", rid)
    return str(value)


def _sampling(obj: dict[str, Any], rid: str | None) -> Sampling:
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
    # top_k 0 means "no limit", the engine's default.
    return Sampling(temperature=temperature, top_p=top_p, top_k=top_k or None)


def _stream(obj: dict[str, Any], rid: str | None) -> StreamMode:
    stream = obj.get("stream", False)
    valid = stream in (True, False, None, "sentences")
    _check(valid, "field 'stream' must be true, false or \"sentences\"", rid)
    return "sentences" if stream == "sentences" else "tokens" if stream is True else "off"


def _options(obj: dict[str, Any], rid: str | None) -> dict[str, Any]:
    """The optional fields of a JSON request, checked."""
    session = _field(obj, "session", "str", rid)
    bad_session = session is not None and not valid_level(session)
    _check(not bad_session, "field 'session' must match [A-Za-z0-9_-]{1,64}", rid)
    system = _field(obj, "system", "str", rid)
    too_long = system is not None and len(system) > MAX_SYSTEM
    _check(not too_long, f"field 'system' is longer than {MAX_SYSTEM:,} characters", rid)
    max_tokens = _field(obj, "max_tokens", "int", rid)
    _check(max_tokens is None or max_tokens >= 1, "field 'max_tokens' must be at least 1", rid)
    priority = _field(obj, "priority", "int", rid)
    in_range = priority is None or -10 <= priority <= 10
    _check(in_range, "field 'priority' must be between -10 and 10", rid)
    timeout_s = _field(obj, "timeout_s", "num", rid)
    _check(timeout_s is None or timeout_s > 0, "field 'timeout_s' must be greater than 0", rid)
    return {
        "session": session,
        "system": system,
        "max_tokens": max_tokens,
        "priority": priority or 0,
        "timeout_s": timeout_s,
    }


def parse_request(payload: bytes, source: str | None = None) -> AskMessage:
    """A prompt from `{base}/ask` or `{base}/ask/{source}`; a source is also the default
    session."""
    text, obj = decode(payload)
    client = source or ""
    if obj is None:
        request = Request(new_id(), "mqtt", client, _text(text, None), session=source)
        return AskMessage(request)
    rid = _request_id(obj)
    text = _text(_field(obj, "text", "str", rid), rid)
    options = _options(obj, rid)
    options["session"] = options["session"] or source
    sampling = _sampling(obj, rid)
    stream = _stream(obj, rid)
    reply_to = _field(obj, "reply_to", "str", rid)
    try:
        tools, schema = parse_tool_fields(obj)
    except ToolFieldError as err:
        raise BadRequest(str(err), rid) from None
    options |= {"tools": tools, "output_schema": schema}
    retain = bool(_field(obj, "retain", "bool", rid))
    request = Request(rid or new_id(), "mqtt", client, text, sampling=sampling, **options)
    return AskMessage(request, stream, reply_to, retain)


def parse_cancel(payload: bytes) -> str:
    """The request id of a `{base}/cancel` message ("*" cancels everything)."""
    _, obj = decode(payload)
    if obj is None:
        raise BadRequest('cancel needs a JSON object: {"id": "<request id>"}')
    rid = obj.get("id")
    if not isinstance(rid, str) or not 0 < len(rid) <= 64:
        raise BadRequest("field 'id' must be a string of 1-64 characters")
    return rid
