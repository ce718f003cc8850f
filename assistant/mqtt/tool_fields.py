"""The MQTT request's `tools` and `schema` fields: shapes checked, schemas bounded.

`tools` takes the OpenAI/Ollama form (`{"type": "function", "function": {...}}`) or the
bare function object; `schema` is a JSON schema the reply must match (contract.md).
"""

from __future__ import annotations

from typing import Any

from assistant.core.constrained import check_tools
from assistant.core.request import Tool
from assistant.core.schema_limits import MAX_TOOLS, SchemaChecker
from assistant.errors import RequestError

MAX_DESCRIPTION = 4_000


class ToolFieldError(ValueError):
    """A `tools` or `schema` field that is not acceptable; the message says why."""


def _tool(raw: Any) -> Tool:
    if isinstance(raw, dict) and isinstance(raw.get("function"), dict):
        raw = raw["function"]
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise ToolFieldError("each tool must be an object with a string 'name'")
    description = raw.get("description", "")
    parameters = raw.get("parameters", {"type": "object", "properties": {}})
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        raise ToolFieldError(f"a tool 'description' must be a string of at most {MAX_DESCRIPTION}")
    if not isinstance(parameters, dict):
        raise ToolFieldError("a tool's 'parameters' must be a JSON schema object")
    return Tool(raw["name"], description, parameters)


def parse_tool_fields(obj: dict[str, Any]) -> tuple[tuple[Tool, ...], dict[str, Any] | None]:
    """(tools, schema) of a request object; ToolFieldError for a bad or hostile one."""
    raw_tools = obj.get("tools") or []
    if not isinstance(raw_tools, list) or len(raw_tools) > MAX_TOOLS:
        raise ToolFieldError(f"field 'tools' must be a list of at most {MAX_TOOLS} tools")
    tools = tuple(_tool(t) for t in raw_tools)
    schema = obj.get("schema")
    checker = SchemaChecker()
    try:
        check_tools(tools, checker)
        if schema is not None:
            checker.check(schema, "field 'schema'")
    except RequestError as err:
        raise ToolFieldError(err.message) from None
    if schema is not None and tools:
        raise ToolFieldError("a request carries 'tools' or 'schema', not both")
    return tools, schema
