"""The one request type every front end builds (MQTT, HTTP, Hermes, Wyoming, `ask`).

A front end validates and bounds its protocol's bytes, then builds a `Request`; from here
on nothing sees a raw dict. Unset sampling fields (None) take the configured defaults in
the core, so each default is stated once, in the config.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from assistant.core.events import ToolCall

Role = Literal["system", "user", "assistant", "tool"]
FrontEnd = Literal["mqtt", "http", "hermes", "wyoming", "cli", "page"]


@dataclass(frozen=True)
class Message:
    """One chat turn. An assistant turn may carry the tool calls it made; a `tool` turn
    carries one call's result as text (HA sends no call id: results match calls by
    position)."""

    role: Role
    content: str
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True)
class Tool:
    """A function the model may call: its name, a description and a JSON schema."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class Sampling:
    """Per-request overrides; None means the configured default."""

    temperature: float | None = None  # 0: greedy
    top_p: float | None = None
    top_k: int | None = None
    repeat_penalty: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class Request:
    """One prompt for the core.

    Either `messages` (a whole chat, as the HTTP APIs send it: no server-side history) or
    `text` (one user turn; with `session`, the core adds that conversation's history and
    records the new turn on success). `system` replaces the configured system prompt for
    `text` requests.
    """

    id: str
    front_end: FrontEnd
    client: str  # who asked, for per-client rate limits and logs (a source, an address)
    text: str | None = None
    messages: tuple[Message, ...] = ()
    session: str | None = None
    system: str | None = None
    max_tokens: int | None = None  # clamped to engine.max_tokens
    sampling: Sampling = field(default_factory=Sampling)
    priority: int = 0  # -10..10, higher first
    timeout_s: float | None = None  # None: scheduler.request_timeout_s
    context_tokens: int | None = None  # the client's window (Ollama num_ctx), capped by the plan
    tools: tuple[Tool, ...] = ()
    output_schema: dict[str, Any] | None = None  # a JSON schema the reply must match


def new_id() -> str:
    """An id for a request that came without one."""
    return uuid.uuid4().hex[:16]
