"""OpenAI's `POST /v1/chat/completions` body validated into a `Request`.

Tool-call arguments arrive as JSON strings and tool results carry a `tool_call_id`;
results are put in the order of the calls they answer (the prompt matches them by
position). `tool_choice: "none"` hides the tools; a named choice offers only that one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from assistant.config_schema import MAX_TOKENS_LIMIT
from assistant.core.request import Message, Request, Sampling, Tool
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
    tool_name,
)
from assistant.http.ollama_schema import HTTP_PRIORITY


@dataclass(frozen=True)
class Completion:
    model: str
    stream: bool
    include_usage: bool  # stream_options.include_usage: a last chunk with the usage
    request: Request


def _content(raw: dict[str, Any], where: str) -> str:
    """A string, null, or a list of text parts."""
    value = raw.get("content")
    if value is None or isinstance(value, str):
        return text(raw, "content", max_len=MAX_CONTENT) or ""
    if not isinstance(value, list):
        raise BodyError(f"{where}.content: must be a string or a list of parts")
    parts: list[str] = []
    for j, part in enumerate(value):
        if not isinstance(part, dict) or part.get("type") != "text":
            raise BodyError(f"{where}.content[{j}]: only text parts; this model reads text only")
        parts.append(text(part, "text", required=True, max_len=MAX_CONTENT) or "")
    joined = "".join(parts)
    if len(joined) > MAX_CONTENT:
        raise BodyError(f"{where}.content: longer than {MAX_CONTENT:,} characters")
    return joined


def _messages(raw: list[Any]) -> tuple[Message, ...]:
    out: list[Message] = []
    for i, entry in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(entry, dict):
            raise BodyError(f"{where}: must be an object")
        role = role_of(entry, where)
        calls = parse_calls(entry.get("tool_calls"), f"{where}.tool_calls")
        if calls and role != "assistant":
            raise BodyError(f"{where}.tool_calls: only assistant messages carry tool calls")
        out.append(Message(role, _content(entry, where), calls))
    return _order_results(out, raw)


def _order_results(messages: list[Message], raw: list[Any]) -> tuple[Message, ...]:
    """Each run of tool results sorted into the order of the calls they answer."""
    ordered = list(messages)
    i = 0
    while i < len(ordered):
        if ordered[i].role != "tool" or i == 0 or ordered[i - 1].role != "assistant":
            i += 1
            continue
        ids = [str(c.get("id", "")) for c in raw[i - 1].get("tool_calls") or []]
        end = i
        while end < len(ordered) and ordered[end].role == "tool":
            end += 1
        run = list(zip(ordered[i:end], raw[i:end], strict=True))
        run.sort(key=lambda pair: _position(ids, pair[1].get("tool_call_id")))
        ordered[i:end] = [m for m, _ in run]
        i = end
    return check_chat(ordered)


def _position(ids: list[str], call_id: Any) -> int:
    return ids.index(call_id) if isinstance(call_id, str) and call_id in ids else len(ids)


def _tools(data: dict[str, Any]) -> tuple[Tool, ...]:
    tools = parse_tools(items(data, "tools", MAX_TOOLS))
    choice = data.get("tool_choice")
    if choice is None or choice in ("auto", "required"):
        return tools
    if choice == "none":
        return ()
    function = choice.get("function") if isinstance(choice, dict) else None
    if not isinstance(function, dict):
        raise BodyError('tool_choice: must be "none", "auto", "required" or a named function')
    name = tool_name(function.get("name"), "tool_choice.function.name")
    chosen = tuple(t for t in tools if t.name == name)
    if not chosen:
        raise BodyError(f"tool_choice: no tool named {name!r} in tools")
    return chosen


def _schema(data: dict[str, Any]) -> dict[str, Any] | None:
    fmt = obj(data, "response_format")
    if fmt is None or fmt.get("type") == "text":
        return None
    if fmt.get("type") == "json_object":
        return {"type": "object"}
    if fmt.get("type") == "json_schema":
        spec = obj(fmt, "json_schema", required=True) or {}
        schema = spec.get("schema", {})
        if not isinstance(schema, dict):
            raise BodyError("response_format.json_schema.schema: must be a JSON schema object")
        return schema
    raise BodyError('response_format.type: must be "text", "json_object" or "json_schema"')


def parse_completion(data: dict[str, Any], rid: str, client: str) -> Completion:
    model = text(data, "model", required=True)
    assert model is not None
    if integer(data, "n", 1, 1_000_000) not in (None, 1):
        raise BodyError("n: only one choice per request")
    for ignored in ("frequency_penalty", "presence_penalty"):
        number(data, ignored, -2.0, 2.0)  # accepted for compatibility, type-checked
    max_tokens = integer(data, "max_completion_tokens", 1, 1 << 30)
    if max_tokens is None:
        max_tokens = integer(data, "max_tokens", 1, 1 << 30)
    stream_options = obj(data, "stream_options") or {}
    user = text(data, "user", max_len=256)
    request = Request(
        id=rid,
        front_end="http",
        client=f"{client}/{user}" if user else client,
        messages=_messages(items(data, "messages", MAX_MESSAGES)),
        max_tokens=min(max_tokens, MAX_TOKENS_LIMIT) if max_tokens is not None else None,
        sampling=Sampling(
            temperature=number(data, "temperature", 0.0, 2.0),
            top_p=number(data, "top_p", 0.0, 1.0),
            seed=integer(data, "seed", -(2**63), 2**63 - 1),
            stop=stops(data, "stop", MAX_STOPS),
        ),
        priority=HTTP_PRIORITY,
        tools=_tools(data),
        output_schema=_schema(data),
    )
    return Completion(
        model, flag(data, "stream", False), flag(stream_options, "include_usage", False), request
    )
