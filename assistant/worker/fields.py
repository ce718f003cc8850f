"""Field readers for IPC messages: each checks one field's type and bounds, or raises.

`assistant.worker.protocol` builds its typed frames with these; a failed check is a
`ProtocolError`, after which the channel is out of step and is closed.
"""

from __future__ import annotations

import math
from typing import Any

from assistant.core.events import ToolCall
from assistant.engine.request import GenerationRequest, SamplingParams
from assistant.ipc import MAX_FRAME, ProtocolError

Payload = dict[str, Any]
MAX_TEXT = 256 * 1024
"""Longest text field (a reply, a delta) accepted in a frame, in characters."""
MAX_INT = 1 << 63
MAX_TOKENS = 1 << 20
MAX_MESSAGES = 1024
MAX_STOPS = 64
MAX_PRIORITY = 10  # as the scheduler allows, either way


def check_type(payload: Payload, expected: str) -> None:
    if payload.get("type") != expected:
        raise ProtocolError(f"expected a {expected!r} frame, got {str(payload.get('type'))[:32]!r}")


def get_str(payload: Payload, key: str, limit: int = MAX_TEXT) -> str:
    value = payload.get(key)
    if not isinstance(value, str) or len(value) > limit:
        raise ProtocolError(f"field {key!r} must be a string of at most {limit} characters")
    return value


def get_optional_str(payload: Payload, key: str, limit: int) -> str | None:
    return None if payload.get(key) is None else get_str(payload, key, limit)


def get_int(payload: Payload, key: str, *, minimum: int = 0, maximum: int = MAX_INT) -> int:
    value = payload.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ProtocolError(f"field {key!r} must be an integer from {minimum} to {maximum}")
    return value


def get_optional_int(payload: Payload, key: str) -> int | None:
    return None if payload.get(key) is None else get_int(payload, key)


def get_num(payload: Payload, key: str, *, maximum: float = float(MAX_INT)) -> float:
    value = payload.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError(f"field {key!r} must be a number")
    number = float(value)
    if not (math.isfinite(number) and 0.0 <= number <= maximum):
        raise ProtocolError(f"field {key!r} must be from 0 to {maximum}")
    return number


def get_bool(payload: Payload, key: str, default: bool) -> bool:
    value = payload.get(key, default)
    if not isinstance(value, bool):
        raise ProtocolError(f"field {key!r} must be true or false")
    return value


def get_object(payload: Payload, key: str) -> Payload:
    value = payload.get(key)
    if not isinstance(value, dict):
        raise ProtocolError(f"field {key!r} must be an object")
    return value


def get_str_list(payload: Payload, key: str, count: int, limit: int) -> tuple[str, ...]:
    value = payload.get(key)
    if not isinstance(value, list) or len(value) > count:
        raise ProtocolError(f"field {key!r} must be a list of at most {count} strings")
    if not all(isinstance(item, str) and len(item) <= limit for item in value):
        raise ProtocolError(f"field {key!r} must hold strings of at most {limit} characters")
    return tuple(value)


def get_messages(payload: Payload, key: str) -> tuple[tuple[str, str], ...]:
    value = payload.get(key)
    if not isinstance(value, list) or len(value) > MAX_MESSAGES:
        raise ProtocolError(f"field {key!r} must be a list of at most {MAX_MESSAGES} pairs")
    return tuple(_message(pair) for pair in value)


def _message(pair: object) -> tuple[str, str]:
    if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
        raise ProtocolError("each message must be a [role, content] pair of strings")
    role, content = pair
    if len(role) > 32 or len(content) > MAX_FRAME:
        raise ProtocolError("a message role or content is too long")
    return role, content


def get_request(payload: Payload) -> GenerationRequest:
    """A generate frame's request (its fields sit beside the frame's type)."""
    return GenerationRequest(
        id=get_str(payload, "id", 64),
        messages=get_messages(payload, "messages"),
        max_tokens=get_int(payload, "max_tokens", maximum=MAX_TOKENS),
        sampling=get_sampling(get_object(payload, "sampling")),
        stop=get_str_list(payload, "stop", MAX_STOPS, 256),
        grammar=get_optional_str(payload, "grammar", MAX_FRAME),
        calls=get_bool(payload, "calls", False),
        priority=get_int(payload, "priority", minimum=-MAX_PRIORITY, maximum=MAX_PRIORITY),
    )


def get_sampling(payload: Payload) -> SamplingParams:
    return SamplingParams(
        temperature=get_num(payload, "temperature", maximum=100.0),
        top_k=get_int(payload, "top_k", maximum=1 << 24),
        top_p=get_num(payload, "top_p", maximum=1.0),
        repetition_penalty=get_num(payload, "repetition_penalty", maximum=100.0),
        seed=get_optional_int(payload, "seed"),
    )


MAX_CALLS = 16  # tool calls accepted in one result


def calls_payload(calls: tuple[ToolCall, ...]) -> list[Payload]:
    return [{"name": c.name, "arguments": c.arguments} for c in calls]


def get_tool_calls(payload: Payload, key: str) -> tuple[ToolCall, ...]:
    """Tool calls of a result (absent: none): a name and an object of arguments each."""
    value = payload.get(key, [])
    if not isinstance(value, list) or len(value) > MAX_CALLS:
        raise ProtocolError(f"field {key!r} must be a list of at most {MAX_CALLS} calls")
    calls = []
    for call in value:
        if not isinstance(call, dict) or not isinstance(call.get("arguments"), dict):
            raise ProtocolError("a tool call must be an object with 'name' and 'arguments'")
        calls.append(ToolCall(get_str(call, "name", 64), call["arguments"]))
    return tuple(calls)


def json_ready(value: Any) -> Any:
    """Tuples as lists, as they come back from JSON (so a frame equals its own decoding)."""
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    return value
