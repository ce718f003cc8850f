"""Ollama's request bodies (`/api/chat`, `/api/generate`) validated into `Request`s.

Accepts what Home Assistant's `ollama` integration sends: integers as floats
(`num_ctx: 8192.0`), `keep_alive` as a string or a number, `"tools": []`, `think` as a
boolean. Options this server has no use for (`num_thread`, `mirostat`…) are ignored, as
Ollama does; the ones it honours are type- and range-checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from assistant.config_schema import MAX_TOKENS_LIMIT
from assistant.core.request import Message, Request, Sampling
from assistant.http.body import BodyError, flag, integer, items, number, obj, stops, text
from assistant.http.chat_schema import (
    MAX_CONTENT,
    MAX_MESSAGES,
    MAX_STOPS,
    MAX_TOOLS,
    check_chat,
    parse_calls,
    parse_tools,
    role_of,
)

MAX_CONTEXT = 1 << 20  # num_ctx beyond any model; the plan caps it further


@dataclass(frozen=True)
class Call:
    """A validated generation call: the model asked for, streaming or not, the request."""

    model: str
    stream: bool
    request: Request


def _sampling(options: dict[str, Any]) -> Sampling:
    return Sampling(
        temperature=number(options, "temperature", 0.0, 2.0),
        top_p=number(options, "top_p", 0.0, 1.0),
        top_k=integer(options, "top_k", 0, 100_000),
        repeat_penalty=number(options, "repeat_penalty", 0.0, 10.0),
        seed=integer(options, "seed", -(2**63), 2**63 - 1),
        stop=stops(options, "stop", MAX_STOPS),
    )


def _max_tokens(options: dict[str, Any]) -> int | None:
    # -1: no limit, -2: fill the context (Ollama); both mean "as many as allowed" here.
    value = integer(options, "num_predict", -2, 1 << 30)
    if value is None or value < 0:
        return None
    if value == 0:
        raise BodyError("options.num_predict: must be at least 1 (or -1 for no limit)")
    return min(value, MAX_TOKENS_LIMIT)


def _common(data: dict[str, Any]) -> tuple[str, bool, dict[str, Any], dict[str, Any] | None]:
    """model, stream, options and format; checks the fields accepted only for their type."""
    model = text(data, "model", required=True)
    assert model is not None
    options = obj(data, "options") or {}
    keep_alive = data.get("keep_alive")  # "-1.0s", "5m", 300, -1: nothing to keep here
    if keep_alive is not None and (
        isinstance(keep_alive, bool) or not isinstance(keep_alive, str | int | float)
    ):
        raise BodyError("keep_alive: must be a duration string or a number of seconds")
    think = data.get("think")
    if think is not None and not isinstance(think, bool | str):
        raise BodyError("think: must be true, false or a level")
    fmt = data.get("format")
    schema: dict[str, Any] | None = None
    if fmt == "json":
        schema = {"type": "object"}
    elif isinstance(fmt, dict):
        schema = fmt
    elif fmt not in (None, ""):
        raise BodyError('format: must be "json" or a JSON schema object')
    return model, flag(data, "stream", True), options, schema


def _request(
    rid: str, client: str, options: dict[str, Any], schema: dict[str, Any] | None, **kw: Any
) -> Request:
    try:
        return Request(
            id=rid,
            front_end="http",
            client=client,
            max_tokens=_max_tokens(options),
            sampling=_sampling(options),
            context_tokens=integer(options, "num_ctx", 1, MAX_CONTEXT),
            output_schema=schema,
            priority=HTTP_PRIORITY,
            **kw,
        )
    except BodyError as err:
        raise BodyError(f"options.{err.message}") from err


# Someone is usually waiting on an HTTP reply (Assist, a chat window): the priority voice
# requests have, which may use the batch slots kept for priority > 0.
HTTP_PRIORITY = 1


def _message(raw: Any, i: int) -> Message:
    where = f"messages[{i}]"
    if not isinstance(raw, dict):
        raise BodyError(f"{where}: must be an object")
    role = role_of(raw, where)
    content = text(raw, "content", max_len=MAX_CONTENT) or ""
    if raw.get("images"):
        raise BodyError(f"{where}.images: this model reads text only")
    calls = parse_calls(raw.get("tool_calls"), f"{where}.tool_calls")
    if calls and role != "assistant":
        raise BodyError(f"{where}.tool_calls: only assistant messages carry tool calls")
    return Message(role, content, calls)


def parse_chat(data: dict[str, Any], rid: str, client: str) -> Call:
    """`POST /api/chat`."""
    model, stream, options, schema = _common(data)
    messages = check_chat(
        [_message(m, i) for i, m in enumerate(items(data, "messages", MAX_MESSAGES))]
    )
    tools = parse_tools(items(data, "tools", MAX_TOOLS))
    request = _request(rid, client, options, schema, messages=messages, tools=tools)
    return Call(model, stream, request)


def parse_generate(data: dict[str, Any], rid: str, client: str) -> Call | str:
    """`POST /api/generate`; only the model name when the prompt is empty (Ollama's way
    of asking to load a model)."""
    model, stream, options, schema = _common(data)
    prompt = text(data, "prompt", max_len=MAX_CONTENT) or ""
    system = text(data, "system", max_len=MAX_CONTENT)
    if data.get("images"):
        raise BodyError("images: this model reads text only")
    if flag(data, "raw", False):
        raise BodyError("raw: prompts always go through the model's chat template here")
    for unsupported in ("template", "suffix"):
        if text(data, unsupported, max_len=MAX_CONTENT):
            raise BodyError(f"{unsupported}: not supported by this server")
    if not prompt.strip():
        return model
    return Call(model, stream, _request(rid, client, options, schema, text=prompt, system=system))
