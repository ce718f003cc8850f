"""What Ollama's and OpenAI's chat bodies share: tools, tool calls, roles and the limits
on each (the body limit bounds the total; these bound what one field may hold)."""

from __future__ import annotations

import re
from typing import Any

from assistant.core.events import ToolCall
from assistant.core.prompt import MAX_TEXT
from assistant.core.request import Message, Role, Tool
from assistant.http.body import BodyError, json_object, text

MAX_MESSAGES = 256  # as the core allows
MAX_CONTENT = MAX_TEXT  # characters in one message, as the core allows
MAX_TOOLS = 128
MAX_CALLS = 32  # tool calls in one assistant message
MAX_STOPS = 4  # as the core allows
# A function name as OpenAI allows it; also keeps names printable in prompts and logs.
TOOL_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
ROLES: dict[str, Role] = {
    "system": "system",
    "developer": "system",  # OpenAI's newer name for the system turn
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
}


def tool_name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not TOOL_NAME.match(value):
        raise BodyError(f"{where}: must be a function name of [A-Za-z0-9_.:-], 1-64 characters")
    return value


def parse_tools(raw: list[Any]) -> tuple[Tool, ...]:
    """`[{"type": "function", "function": {name, description, parameters}}]`."""
    tools: list[Tool] = []
    for i, entry in enumerate(raw):
        where = f"tools[{i}]"
        if not isinstance(entry, dict) or entry.get("type", "function") != "function":
            raise BodyError(f'{where}: must be {{"type": "function", "function": {{...}}}}')
        function = entry.get("function")
        if not isinstance(function, dict):
            raise BodyError(f"{where}.function: must be an object")
        name = tool_name(function.get("name"), f"{where}.function.name")
        description = text(function, "description", max_len=8192) or ""
        parameters = function.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(parameters, dict):
            raise BodyError(f"{where}.function.parameters: must be a JSON schema object")
        tools.append(Tool(name, description, parameters))
    return tuple(tools)


def parse_calls(raw: Any, where: str) -> tuple[ToolCall, ...]:
    """An assistant message's `tool_calls` (arguments: an object, or OpenAI's string)."""
    if raw is None:
        return ()
    if not isinstance(raw, list) or len(raw) > MAX_CALLS:
        raise BodyError(f"{where}: must be a list of at most {MAX_CALLS} calls")
    calls: list[ToolCall] = []
    for i, call in enumerate(raw):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            raise BodyError(f"{where}[{i}].function: must be an object")
        name = tool_name(function.get("name"), f"{where}[{i}].function.name")
        arguments = json_object(function.get("arguments", {}), f"{where}[{i}].function.arguments")
        calls.append(ToolCall(name, arguments))
    return tuple(calls)


def role_of(message: dict[str, Any], where: str) -> Role:
    role = message.get("role")
    if not isinstance(role, str) or role not in ROLES:
        raise BodyError(f"{where}.role: must be one of system, user, assistant, tool")
    return ROLES[role]


def check_chat(messages: list[Message]) -> tuple[Message, ...]:
    if not messages:
        raise BodyError("messages: at least one message is required")
    if not any(m.role in ("user", "tool") for m in messages):
        raise BodyError("messages: there is no user or tool message to answer")
    return tuple(messages)
