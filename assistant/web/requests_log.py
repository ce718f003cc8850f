"""Recent requests for the page: who asked (front end), how it ended, how fast. Memory
only and bounded; the prompt text is kept only when `web.keep_prompts` says so."""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from assistant.core.events import Finished
from assistant.core.request import Request

KEEP = 100  # entries
PROMPT_CHARS = 300  # a kept prompt is cut to this many characters


@dataclass(frozen=True)
class RequestEntry:
    id: str
    front_end: str
    finished_at: str
    latency_ms: float | None
    tokens_per_s: float | None
    completion_tokens: int | None
    finish_reason: str | None
    error_code: str | None
    prompt: str | None


def _prompt_of(request: Request) -> str:
    if request.text is not None:
        return request.text
    users = [m.content for m in request.messages if m.role == "user"]
    return users[-1] if users else ""


class RequestLog:
    def __init__(self, *, keep_prompts: bool = False, size: int = KEEP) -> None:
        self.keep_prompts = keep_prompts
        self._entries: deque[RequestEntry] = deque(maxlen=size)

    def record(self, request: Request, final: Finished) -> None:
        """Called once per request, with its one final event."""
        result, error = final.result, final.error
        timing = result.timing if result is not None else None
        prompt = _prompt_of(request)[:PROMPT_CHARS] if self.keep_prompts else None
        self._entries.append(
            RequestEntry(
                id=final.id,
                front_end=request.front_end,
                finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
                latency_ms=round(timing.total_ms, 1) if timing is not None else None,
                tokens_per_s=round(timing.tokens_per_s, 1) if timing is not None else None,
                completion_tokens=result.usage.completion_tokens if result is not None else None,
                finish_reason=result.finish_reason if result is not None else None,
                error_code=error.code if error is not None else None,
                prompt=prompt,
            )
        )

    def entries(self) -> list[dict[str, Any]]:
        """Newest first."""
        return [asdict(entry) for entry in reversed(self._entries)]

    def __len__(self) -> int:
        return len(self._entries)
