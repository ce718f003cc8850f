"""From a request's tools and output schema to the grammar the worker enforces.

The one entry point front ends (through the core) call: it bounds the untrusted schemas,
reads HA's Static Context, decides whether the turn acts (core/act.py) and builds the
grammar (core/grammar.py). Compilation happens later, in the sandboxed worker.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from assistant.core.act import decide
from assistant.core.grammar import Narrowing, json_grammar, short_text_grammar, tools_grammar
from assistant.core.home import Home, parse_static_context
from assistant.core.request import Request, Tool
from assistant.core.schema_limits import MAX_TOOLS, SchemaChecker
from assistant.errors import RequestError

_TOOL_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True)
class Constraint:
    """The grammar of one request (None: free text) and whether it may produce calls."""

    grammar: str | None = None
    calls: bool = False


@dataclass(frozen=True)
class ToolPolicy:
    """Config `tools`: ground arguments in the Static Context, decide before calling."""

    grounding: bool = True
    decide: bool = True


DEFAULT_POLICY = ToolPolicy()


def check_tools(tools: Sequence[Tool], checker: SchemaChecker) -> None:
    if len(tools) > MAX_TOOLS:
        raise RequestError("invalid_request", f"{len(tools)} tools; the limit is {MAX_TOOLS}")
    seen = set()
    for tool in tools:
        if not _TOOL_NAME.match(tool.name):
            raise RequestError(
                "invalid_request", "a tool name must be 1-64 characters of [A-Za-z0-9_.-]"
            )
        if tool.name in seen:
            raise RequestError("invalid_request", f"tool {tool.name!r} is listed twice")
        seen.add(tool.name)
        checker.check(tool.parameters, f"tool {tool.name!r}")


def _grounded(tools: Sequence[Tool], system: str, policy: ToolPolicy) -> Home | None:
    """The home, when grounding is on and the system prompt has a Static Context."""
    if not policy.grounding or not tools:
        return None
    return parse_static_context(system)


def constraint_for(
    messages: Sequence[tuple[str, str]],
    tools: Sequence[Tool],
    output_schema: dict[str, Any] | None,
    policy: ToolPolicy = DEFAULT_POLICY,
) -> Constraint:
    """The grammar for a chat's next reply; RequestError(invalid_request) for a schema
    out of bounds. `messages` are (role, content), the system prompt first if any."""
    checker = SchemaChecker()
    check_tools(tools, checker)
    if output_schema is not None:
        return Constraint(json_grammar(checker.check(output_schema, "format")))
    if not tools:
        return Constraint()
    system = messages[0][1] if messages and messages[0][0] == "system" else ""
    home = _grounded(tools, system, policy)
    turns = [m for m in messages if m[0] != "system"]
    if policy.decide:
        decision = decide(turns, list(tools), home)
        if decision.short:
            return Constraint(short_text_grammar())
        narrowing = decision.narrowing
    else:
        narrowing = Narrowing()
    if home is not None and not narrowing.values:
        grounded = {"name": home.names, "area": home.areas, "domain": home.domains}
        narrowing = replace(narrowing, values={k: v for k, v in grounded.items() if v})
    calls = narrowing.calls
    return Constraint(tools_grammar(tools, narrowing), calls)


def request_constraint(request: Request, default_system: str, policy: ToolPolicy) -> Constraint:
    """`constraint_for` a core request, read before tool_prompt renders it: the system
    prompt as the client wrote it (HA's Static Context) and the turns with their roles."""
    messages = list(request.messages)
    system = request.system if request.system is not None else default_system
    if messages and messages[0].role == "system":
        system = messages.pop(0).content
    turns = [(m.role, m.content) for m in messages] or [("user", request.text or "")]
    return constraint_for(
        [("system", system), *turns], request.tools, request.output_schema, policy
    )
