"""The reply and error objects of the public contract, built in one place for MQTT and CLI."""

from __future__ import annotations

from typing import Any

from assistant.core.events import GenerationResult
from assistant.errors import RequestError


def reply_payload(
    result: GenerationResult, model_id: str, session: str | None = None
) -> dict[str, Any]:
    """contract.md "Replies": the success object."""
    return {
        "id": result.id,
        "text": result.text,
        "finish_reason": result.finish_reason,
        "session": session,
        "model": model_id,
        "usage": {
            "prompt_tokens": result.usage.prompt_tokens,
            "completion_tokens": result.usage.completion_tokens,
        },
        "timing": {
            "queued_ms": result.timing.queued_ms,
            "first_token_ms": result.timing.first_token_ms,
            "total_ms": result.timing.total_ms,
            "tokens_per_s": result.timing.tokens_per_s,
        },
    }


def error_payload(request_id: str | None, error: RequestError) -> dict[str, Any]:
    """contract.md "Replies": the error object; `id` is None only when none could be read."""
    return {"id": request_id, "error": error.to_payload()}
