"""What a request gives back: text deltas, then exactly one `Finished`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from assistant.errors import RequestError


@dataclass(frozen=True)
class ToolCall:
    """One call the model made: a tool's name and its arguments (a JSON object)."""

    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Timing:
    queued_ms: float
    first_token_ms: float
    total_ms: float
    tokens_per_s: float


@dataclass(frozen=True)
class GenerationResult:
    id: str
    text: str
    finish_reason: str  # "stop", "length", "cancelled" or "tool_calls"
    usage: Usage
    timing: Timing
    tool_calls: tuple[ToolCall, ...] = field(default=())


@dataclass(frozen=True)
class Delta:
    """New text of one request; `seq` counts from 0 with no gaps."""

    id: str
    seq: int
    text: str


@dataclass(frozen=True)
class Finished:
    """The one final event of a request: a result or an error, never both."""

    id: str
    result: GenerationResult | None = None
    error: RequestError | None = None


Event = Delta | Finished
