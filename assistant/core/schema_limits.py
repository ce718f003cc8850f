"""Bounds on untrusted JSON schemas (tool parameters, Ollama `format`, OpenAI
`response_format`), checked in the service before anything reaches the grammar compiler.

A schema becomes a grammar inside the sandboxed worker; its compile time and size grow
with nesting, enum values and `$ref` chains, so those are bounded here, where a refusal
is a plain `invalid_request` and costs microseconds. The compiler's own limits
(llguidance's fuel and grammar size) are the second line, inside the worker.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from assistant.errors import RequestError

MAX_SCHEMA_BYTES = 64 * 1024  # one schema, serialized
MAX_NODES = 4_000  # objects and arrays in one request's schemas together
MAX_DEPTH = 16  # nesting of schema objects and arrays, following $ref
MAX_ENUM_VALUES = 1_000  # enum/const values in one request's schemas together
MAX_LITERAL_CHARS = 200  # one enum value, const, pattern or property name
MAX_TOOLS = 64


@dataclass
class _Budget:
    nodes: int = 0
    enum_values: int = 0


def _refuse(where: str, why: str) -> RequestError:
    return RequestError("invalid_request", f"{where}: schema refused: {why}")


def _resolve(root: dict[str, Any], ref: str, where: str) -> Any:
    """A local `#/$defs/x` or `#/definitions/x` reference; anything else is refused."""
    parts = ref.split("/")
    if len(parts) != 3 or parts[0] != "#" or parts[1] not in ("$defs", "definitions"):
        raise _refuse(where, f"only local #/$defs/NAME references are supported, got {ref[:80]!r}")
    target = root.get(parts[1], {})
    if not isinstance(target, dict) or parts[2] not in target:
        raise _refuse(where, f"unresolved reference {ref[:80]!r}")
    return target[parts[2]]


def _check_literals(node: dict[str, Any], budget: _Budget, where: str) -> None:
    values: list[Any] = []
    if isinstance(node.get("enum"), list):
        values.extend(node["enum"])
    if "const" in node:
        values.append(node["const"])
    budget.enum_values += len(values)
    if budget.enum_values > MAX_ENUM_VALUES:
        raise _refuse(where, f"more than {MAX_ENUM_VALUES} enum/const values")
    for text in [*values, node.get("pattern", "")]:
        if isinstance(text, str) and len(text) > MAX_LITERAL_CHARS:
            raise _refuse(where, f"a literal or pattern longer than {MAX_LITERAL_CHARS} characters")
    properties = node.get("properties")
    if isinstance(properties, dict) and any(len(k) > MAX_LITERAL_CHARS for k in properties):
        raise _refuse(where, f"a property name longer than {MAX_LITERAL_CHARS} characters")


def _follow(
    ref: Any, root: dict[str, Any], depth: int, refs: tuple[str, ...], budget: _Budget, where: str
) -> None:
    """Walk a `$ref`'s target as if it stood here; a reference back to itself is refused
    (a recursive schema has no bounded grammar worth compiling on a small device)."""
    if not isinstance(ref, str):
        return
    if ref in refs:
        raise _refuse(where, f"recursive reference {ref[:80]!r}")
    _walk(_resolve(root, ref, where), root, depth + 1, (*refs, ref), budget, where)


def _walk(
    node: Any, root: dict[str, Any], depth: int, refs: tuple[str, ...], budget: _Budget, where: str
) -> None:
    if not isinstance(node, dict | list):
        return
    budget.nodes += 1
    if budget.nodes > MAX_NODES:
        raise _refuse(where, f"more than {MAX_NODES} schema nodes")
    if depth > MAX_DEPTH:
        raise _refuse(where, f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(node, list):
        for item in node:
            _walk(item, root, depth + 1, refs, budget, where)
        return
    _check_literals(node, budget, where)
    _follow(node.get("$ref"), root, depth, refs, budget, where)
    for key, value in node.items():
        if key in ("$defs", "definitions", "enum", "const", "default", "examples"):
            continue  # definitions are checked where they are used; literals above
        if isinstance(value, dict | list):
            _walk(value, root, depth + 1, refs, budget, where)


class SchemaChecker:
    """Checks every schema of one request against one shared budget."""

    def __init__(self) -> None:
        self._budget = _Budget()

    def check(self, schema: Any, where: str) -> dict[str, Any]:
        """The schema itself when it is within bounds; RequestError(invalid_request) if not."""
        if not isinstance(schema, dict):
            raise _refuse(where, "a schema must be a JSON object")
        try:
            size = len(json.dumps(schema))
        except (TypeError, ValueError) as err:
            raise _refuse(where, "not JSON-serializable") from err
        if size > MAX_SCHEMA_BYTES:
            raise _refuse(where, f"{size:,} bytes; the limit is {MAX_SCHEMA_BYTES:,}")
        _walk(schema, schema, 0, (), self._budget, where)
        return schema
