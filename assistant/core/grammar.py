"""What a constrained reply may look like, as a grammar in llguidance's Lark dialect.

Built in the service (pure string work, numpy-free); compiled and enforced inside the
sandboxed worker (engine/constrain.py). A reply under a tools grammar is either text or

    <tool_call>
    {"name": "HassTurnOn", "arguments": {"name": "Kitchen Light"}}
    </tool_call>

(one or more such blocks, each a tool's name and arguments matching that tool's schema):
the form core/tool_prompt.py shows the model in the system turn and in earlier turns.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from assistant.core.events import ToolCall
from assistant.core.request import Tool
from assistant.core.tool_prompt import TOOL_CALL_CLOSE, TOOL_CALL_OPEN

CALL_OPEN = TOOL_CALL_OPEN
CALL_CLOSE = TOOL_CALL_CLOSE
# Compact JSON: flexible whitespace lets a small model loop on spaces and newlines.
_COMPACT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
# Free text never starts with "<" (so text and a call are told apart by the first byte)
# nor with whitespace.
_TEXT = r"/[^<\s](.|\n)*/"
# After a tool result: one short line, then the end of the turn.
_SHORT_TEXT = r"/[^<\s][^\n]{0,240}/"


@dataclass(frozen=True)
class Narrowing:
    """Restrictions beyond the tools' own schemas (grounding and the decision to act).

    `values` replaces a string (or array-of-string) argument's schema with an enum of the
    given values, in every tool that has that argument; `properties` (when set) is the only
    arguments a call may carry, `required` those it must carry."""

    text: bool = True
    calls: bool = True
    tools: tuple[str, ...] | None = None
    values: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    integers: tuple[int, ...] = ()
    properties: frozenset[str] | None = None
    required: tuple[str, ...] = ()
    max_calls: int = 4  # a bound, so a small model cannot repeat calls until max_tokens


# Bounds added where a schema sets none: an unbounded number, string or list lets a small
# model loop on digits or characters until max_tokens cuts the reply (and the call) short.
_DEFAULT_BOUNDS: dict[str, dict[str, Any]] = {
    "integer": {"minimum": -(10**9), "maximum": 10**9},
    "number": {"minimum": -(10**9), "maximum": 10**9},
    "string": {"maxLength": 200},
    "array": {"maxItems": 16},
}
_LITERALS = ("enum", "const", "default", "examples")


def bounded(schema: Any) -> Any:
    """The schema with every object that does not say otherwise closed to properties it
    does not name (JSON Schema's default, any extra key, lets a small model wander off into
    invented keys) and every open-ended scalar or list given a bound."""
    if isinstance(schema, list):
        return [bounded(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: v if k in _LITERALS else bounded(v) for k, v in schema.items()}
    if "properties" in schema and "additionalProperties" not in schema:
        out["additionalProperties"] = False
    kind = schema.get("type")
    if isinstance(kind, str) and not any(k in schema for k in (*_LITERALS, "pattern", "format")):
        for key, value in _DEFAULT_BOUNDS.get(kind, {}).items():
            out.setdefault(key, value)
    return out


def _schema_json(schema: Mapping[str, Any]) -> str:
    return json.dumps({**bounded(schema), "x-guidance": _COMPACT}, separators=(",", ":"))


def _narrow_property(name: str, prop: Any, narrowing: Narrowing) -> Any:
    if not isinstance(prop, dict):
        return prop
    kind = prop.get("type")
    values = narrowing.values.get(name)
    if values and kind == "string":
        return {"type": "string", "enum": list(values)}
    if values and kind == "array":
        items = {"type": "string", "enum": list(values)}
        return {"type": "array", "items": items, "minItems": 1, "maxItems": len(values)}
    if narrowing.integers and kind == "integer":
        return {"type": "integer", "enum": list(narrowing.integers)}
    return prop


def narrowed_arguments(parameters: Mapping[str, Any], narrowing: Narrowing) -> dict[str, Any]:
    """A tool's parameter schema with the narrowing applied (and nothing else changed)."""
    properties = parameters.get("properties")
    if not isinstance(properties, dict):
        return dict(parameters)
    keep = narrowing.properties
    new_props = {
        key: _narrow_property(key, prop, narrowing)
        for key, prop in properties.items()
        if keep is None or key in keep
    }
    schema = {**parameters, "properties": new_props}
    required = [r for r in parameters.get("required", []) if r in new_props]
    required += [r for r in narrowing.required if r in new_props and r not in required]
    schema["required"] = required
    if keep is not None:
        schema["additionalProperties"] = False
    return schema


def _call_schema(tool: Tool, narrowing: Narrowing) -> str:
    schema = {
        "type": "object",
        "properties": {
            "name": {"const": tool.name},
            "arguments": narrowed_arguments(tool.parameters, narrowing),
        },
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }
    return _schema_json(schema)


def tools_grammar(tools: Sequence[Tool], narrowing: Narrowing = Narrowing()) -> str:
    """Text, or one or more calls of the (allowed) tools, as narrowed."""
    allowed = [t for t in tools if narrowing.tools is None or t.name in narrowing.tools]
    alternatives = []
    if narrowing.text or not allowed:
        alternatives.append("TEXT")
    lines = []
    if narrowing.calls and allowed:
        block = f'"{CALL_OPEN}\\n" call "\\n{CALL_CLOSE}"'
        more = f' ("\\n" {block}){{0,{narrowing.max_calls - 1}}}' if narrowing.max_calls > 1 else ""
        alternatives.append(f"{block}{more}")
        lines.append("call: " + " | ".join(f"call_{i}" for i in range(len(allowed))))
        lines += [f"call_{i}: %json {_call_schema(t, narrowing)}" for i, t in enumerate(allowed)]
    return "\n".join([f"start: {' | '.join(alternatives)}", *lines, f"TEXT: {_TEXT}", ""])


def json_grammar(schema: Mapping[str, Any]) -> str:
    """JSON matching `schema` (Ollama `format`, OpenAI `response_format`)."""
    return f"start: %json {_schema_json(schema)}\n"


def short_text_grammar() -> str:
    """One short line of text and no call: the reply after a tool result."""
    return f"start: SHORT\nSHORT: {_SHORT_TEXT}\n"


def read_calls(text: str) -> tuple[ToolCall, ...]:
    """The calls of a complete reply made under a tools grammar; () when it is text."""
    if not text.startswith(CALL_OPEN):
        return ()
    blocks = text.split(CALL_CLOSE)[:-1]  # the grammar ends a call reply with a close tag
    calls = (json.loads(b.strip().removeprefix(CALL_OPEN)) for b in blocks)
    return tuple(ToolCall(str(c["name"]), dict(c["arguments"])) for c in calls)
