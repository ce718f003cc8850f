"""Tools in the prompt: a chat with tool schemas, assistant tool calls and tool results
rendered as the plain (role, content) turns every chat template accepts.

The form is the Hermes/Qwen2.5 function-calling convention, the one most small
instruction-tuned models with tool use were trained on: the schemas inside `<tools>` in
the system turn, each call as `<tool_call>{"name", "arguments"}</tool_call>` in the
assistant's turn, and results in a user turn as `<tool_response>` blocks. Home Assistant
sends results without call ids, so the n-th result after an assistant turn answers its
n-th call; the call's name is written next to the result so the model sees the pairing.
`tool_calls.parse_tool_calls` reads the same form back from the model's text.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from assistant.core.events import ToolCall
from assistant.core.request import Message, Tool

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"

_TOOLS_INTRO = (
    "# Tools\n\n"
    "You can call functions to act on the user's behalf. Their signatures, one JSON "
    "object a line, are inside <tools></tools>:\n<tools>\n"
)
_TOOLS_OUTRO = (
    "\n</tools>\n\n"
    "To call a function, answer with one JSON object per call, each inside "
    "<tool_call></tool_call> tags:\n"
    '<tool_call>\n{"name": "<function name>", "arguments": {<arguments as JSON>}}\n'
    "</tool_call>\n"
    "Results come back inside <tool_response></tool_response> tags. When no function "
    "is needed, answer in plain text."
)


def tools_block(tools: Sequence[Tool]) -> str:
    """The system-prompt section that describes `tools`."""
    lines = (
        json.dumps(
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.parameters,
                },
            },
            ensure_ascii=False,
        )
        for t in tools
    )
    return _TOOLS_INTRO + "\n".join(lines) + _TOOLS_OUTRO


def call_text(call: ToolCall) -> str:
    body = json.dumps({"name": call.name, "arguments": call.arguments}, ensure_ascii=False)
    return f"{TOOL_CALL_OPEN}\n{body}\n{TOOL_CALL_CLOSE}"


def _assistant_text(message: Message) -> str:
    parts = [message.content] if message.content else []
    parts.extend(call_text(call) for call in message.tool_calls)
    return "\n".join(parts)


def _response_text(content: str, call: ToolCall | None) -> str:
    if call is None:
        body = content
    else:
        try:
            result: object = json.loads(content)
        except ValueError:
            result = content
        body = json.dumps({"name": call.name, "content": result}, ensure_ascii=False)
    return f"<tool_response>\n{body}\n</tool_response>"


def schema_block(schema: dict[str, Any]) -> str:
    """The system-prompt section asking for a reply that matches a JSON schema (asked,
    not enforced: constrained decoding enforces it once the engine has it)."""
    body = json.dumps(schema, ensure_ascii=False)
    return f"Answer with JSON only: one value that matches this JSON schema:\n{body}"


def render_messages(
    messages: Sequence[Message],
    tools: Sequence[Tool],
    default_system: str,
    output_schema: dict[str, Any] | None = None,
) -> tuple[tuple[str, str], ...]:
    """(role, content) turns for a chat template: tools and the output schema described
    in the system turn (added with `default_system` when the chat has none), tool calls
    written into the assistant turns, consecutive tool results merged into a user turn."""
    out: list[tuple[str, str]] = []
    body = list(messages)
    system = default_system
    if body and body[0].role == "system":
        system = body.pop(0).content
    extra = ([tools_block(tools)] if tools else []) + (
        [schema_block(output_schema)] if output_schema is not None else []
    )
    system = "\n\n".join(part for part in (system, *extra) if part)
    if system:
        out.append(("system", system))
    calls: tuple[ToolCall, ...] = ()  # the last assistant turn's calls, matched by position
    answered = 0
    pending: list[str] = []
    for message in body:
        if message.role == "tool":
            call = calls[answered] if answered < len(calls) else None
            pending.append(_response_text(message.content, call))
            answered += 1
            continue
        if pending:
            out.append(("user", "\n".join(pending)))
            pending = []
        if message.role == "assistant":
            calls, answered = message.tool_calls, 0
            out.append(("assistant", _assistant_text(message)))
        else:
            out.append((message.role, message.content))
    if pending:
        out.append(("user", "\n".join(pending)))
    return tuple(out)
