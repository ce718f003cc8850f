"""A GBNF grammar (llama.cpp's grammar format) for "plain text, or one valid call" over a
list of tools, for the llama.cpp anchor of the home evaluation.

A call is written exactly as our own grammar writes it (core/grammar.py): a
`<tool_call>` block holding compact JSON, `{"name": <one of the tools>, "arguments":
<an object matching that tool's parameter schema>}`. The JSON Schema subset covered is the
one tools use: objects with properties (any of them optional unless `required`, in the
declared order, no other keys), strings, integers, numbers, booleans, enums and arrays.
The same bounds our grammar adds where a schema sets none (core/grammar.py `bounded`): a
string at most 200 characters, an array at most 16 items, a number at most 10 digits, so
neither grammar lets the model loop inside one value until the token budget runs out.
Text, as in ours, starts with anything but "<" or whitespace.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

MAX_STRING = 200
MAX_ITEMS = 16
MAX_DIGITS = 10

_BASE = rf"""
string ::= "\"" char{{0,{MAX_STRING}}} "\""
char ::= [^"\\\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{{4}})
integer ::= "-"? ("0" | [1-9] [0-9]{{0,{MAX_DIGITS - 1}}})
number ::= integer ("." [0-9]{{1,{MAX_DIGITS}}})?
boolean ::= "true" | "false"
text ::= [^<\t\n\r ] [^\x00]*
"""


def _literal(value: str) -> str:
    """A GBNF string literal that matches `value` exactly."""
    return json.dumps(value, ensure_ascii=False)


class _Rules:
    def __init__(self) -> None:
        self.rules: dict[str, str] = {}

    def add(self, name: str, body: str) -> str:
        self.rules[name] = body
        return name

    def value(self, schema: Any, name: str) -> str:
        """The rule name for a value matching `schema`."""
        if not isinstance(schema, dict):
            raise TypeError(f"{name}: not a schema object")
        if "enum" in schema or "const" in schema:
            options = schema.get("enum", [schema.get("const")])
            return self.add(name, " | ".join(_literal(json.dumps(o)) for o in options))
        kind = schema.get("type")
        if kind == "object":
            return self.object(schema, name)
        if kind == "array":
            item = self.value(schema.get("items", {"type": "string"}), f"{name}-item")
            most = min(schema.get("maxItems", MAX_ITEMS), MAX_ITEMS) - 1
            return self.add(name, f'"[" ({item} (", " {item}){{0,{most}}})? "]"')
        if kind in ("string", "integer", "number", "boolean"):
            return str(kind)
        raise ValueError(f"{name}: unsupported schema type {kind!r}")

    def object(self, schema: dict[str, Any], name: str) -> str:
        """An object whose keys come in the declared order, each optional unless required;
        S(i, first) is "the keys from the i-th on", `first` when none was written yet."""
        props = list(schema.get("properties", {}).items())
        required = set(schema.get("required", []))
        members = [
            f"{_literal(json.dumps(key) + ': ')} {self.value(sub, f'{name}-{i}')}"
            for i, (key, sub) in enumerate(props)
        ]
        for i in range(len(props), -1, -1):
            for first in (True, False):
                rule = f"{name}-s{i}{'f' if first else 'n'}"
                if i == len(props):
                    self.add(rule, '""')
                    continue
                sep = "" if first else '", " '
                options = [f"{sep}{members[i]} {name}-s{i + 1}n"]
                if props[i][0] not in required:
                    options.append(f"{name}-s{i + 1}{'f' if first else 'n'}")
                self.add(rule, " | ".join(f"({o})" for o in options))
        return self.add(name, f'"{{" {name}-s0f "}}"')


def call_grammar(tools: Sequence[dict[str, Any]], text: bool = True) -> str:
    """GBNF for text (when `text`) or one call of one of `tools` (HA's tool dicts,
    {"type": "function", "function": {"name", "description", "parameters"}})."""
    rules = _Rules()
    calls = []
    for i, tool in enumerate(tools):
        function = tool["function"]
        arguments = rules.value(function.get("parameters") or {"type": "object"}, f"args{i}")
        head = _literal('{"name": ' + json.dumps(function["name"]) + ', "arguments": ')
        calls.append(rules.add(f"call{i}", f'{head} {arguments} "}}"'))
    block = f'"<tool_call>\\n" ({" | ".join(calls)}) "\\n</tool_call>"'
    root = f"root ::= {'text | ' if text else ''}{block}"
    lines = [root, *(f"{k} ::= {v}" for k, v in rules.rules.items())]
    return "\n".join(lines) + _BASE
