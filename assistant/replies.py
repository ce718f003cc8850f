"""The reply objects of the public contract (contract.md "Replies"), for MQTT and `ask`.

Each is a dataclass with `to_payload` (what is published) and `from_payload` (what a
client reads back, the tests included); a payload that does not match raises ValueError.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from assistant.core.events import GenerationResult, Timing, ToolCall, Usage
from assistant.errors import RequestError

FINISH_REASONS = ("stop", "length", "cancelled", "tool_calls")


def calls_payload(calls: tuple[ToolCall, ...]) -> list[dict[str, Any]]:
    return [{"name": c.name, "arguments": c.arguments} for c in calls]


@dataclass(frozen=True)
class Reply:
    """A request's successful final reply."""

    id: str
    text: str
    finish_reason: str
    model: str
    usage: Usage
    timing: Timing
    session: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()  # present in the payload only when there are calls

    @classmethod
    def of(cls, result: GenerationResult, model: str, session: str | None = None) -> Reply:
        return cls(
            result.id,
            result.text,
            result.finish_reason,
            model,
            result.usage,
            result.timing,
            session,
            result.tool_calls,
        )

    def to_payload(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "text": self.text,
            "finish_reason": self.finish_reason,
            "session": self.session,
            "model": self.model,
            "usage": {
                "prompt_tokens": self.usage.prompt_tokens,
                "completion_tokens": self.usage.completion_tokens,
            },
            "timing": {
                "queued_ms": self.timing.queued_ms,
                "first_token_ms": self.timing.first_token_ms,
                "total_ms": self.timing.total_ms,
                "tokens_per_s": self.timing.tokens_per_s,
            },
            **({"tool_calls": calls_payload(self.tool_calls)} if self.tool_calls else {}),
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Reply:
        try:
            usage, timing = payload["usage"], payload["timing"]
            reply = cls(
                id=str(payload["id"]),
                text=str(payload["text"]),
                finish_reason=str(payload["finish_reason"]),
                model=str(payload["model"]),
                usage=Usage(int(usage["prompt_tokens"]), int(usage["completion_tokens"])),
                timing=Timing(
                    float(timing["queued_ms"]),
                    float(timing["first_token_ms"]),
                    float(timing["total_ms"]),
                    float(timing["tokens_per_s"]),
                ),
                session=payload.get("session"),
                tool_calls=tuple(
                    ToolCall(str(c["name"]), dict(c["arguments"]))
                    for c in payload.get("tool_calls", [])
                ),
            )
        except (KeyError, TypeError) as err:
            raise ValueError(f"not a reply object: {err}") from err
        if reply.finish_reason not in FINISH_REASONS:
            raise ValueError(f"unknown finish_reason {reply.finish_reason!r}")
        return reply


@dataclass(frozen=True)
class ErrorReply:
    """A request's final error; `id` is None only when none could be read."""

    id: str | None
    code: str
    message: str

    @classmethod
    def of(cls, request_id: str | None, error: RequestError | None) -> ErrorReply:
        error = error or RequestError("engine_failure", "no result")
        return cls(request_id, error.code, error.message)

    def to_payload(self) -> dict[str, Any]:
        return {"id": self.id, "error": {"code": self.code, "message": self.message}}

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> ErrorReply:
        try:
            error = payload["error"]
            rid = payload["id"]
            return cls(None if rid is None else str(rid), str(error["code"]), str(error["message"]))
        except (KeyError, TypeError) as err:
            raise ValueError(f"not an error object: {err}") from err


@dataclass(frozen=True)
class StreamChunk:
    """One piece of a streamed reply on `{reply topic}/stream`; `seq` counts from 0."""

    id: str
    seq: int
    delta: str

    def to_payload(self) -> dict[str, Any]:
        return {"id": self.id, "seq": self.seq, "delta": self.delta}

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> StreamChunk:
        try:
            return cls(str(payload["id"]), int(payload["seq"]), str(payload["delta"]))
        except (KeyError, TypeError) as err:
            raise ValueError(f"not a stream chunk: {err}") from err
