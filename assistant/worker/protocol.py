"""Typed messages between the service and its worker; JSON objects on `assistant.ipc` frames.

Everything read from the worker is validated here before the parent uses it: the worker
runs untrusted input through native code, so its output is treated as untrusted too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from assistant.errors import RequestError
from assistant.ipc import ProtocolError

if TYPE_CHECKING:  # the worker parses `start` before numpy may be imported (sandbox first)
    from assistant.core.events import GenerationResult
    from assistant.engine.request import GenerationRequest

MAX_TEXT = 64 * 1024  # longest text field accepted from the worker


def _str(payload: dict[str, Any], key: str, limit: int = MAX_TEXT) -> str:
    value = payload.get(key)
    if not isinstance(value, str) or len(value) > limit:
        raise ProtocolError(f"field {key!r} must be a string of at most {limit} characters")
    return value


def _int(payload: dict[str, Any], key: str) -> int:
    value = payload.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ProtocolError(f"field {key!r} must be a non-negative integer")
    return value


def _num(payload: dict[str, Any], key: str) -> float:
    value = payload.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError(f"field {key!r} must be a number")
    return float(value)


@dataclass(frozen=True)
class StartSpec:
    """Parent → worker, first frame: what to load and how to confine itself."""

    model_path: str
    threads: int
    context_tokens: int
    max_batch: int
    kv_budget_bytes: int
    sandbox: bool = True
    memory_bytes: int | None = None
    scratch_dir: str | None = None
    # Tests only: a prompt equal to this makes the worker block in a native call.
    debug_hang_text: str | None = None

    def to_payload(self) -> dict[str, Any]:
        return {"type": "start", **self.__dict__}

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> StartSpec:
        fields = {k: v for k, v in payload.items() if k != "type"}
        try:
            return cls(**fields)
        except TypeError as err:
            raise ProtocolError(f"bad start message: {err}") from err


def generate_payload(request: GenerationRequest) -> dict[str, Any]:
    s = request.sampling
    return {
        "type": "generate",
        "id": request.id,
        "messages": [list(m) for m in request.messages],
        "max_tokens": request.max_tokens,
        "sampling": {
            "temperature": s.temperature,
            "top_k": s.top_k,
            "top_p": s.top_p,
            "repetition_penalty": s.repetition_penalty,
            "seed": s.seed,
        },
        "stop": list(request.stop),
    }


def request_from_payload(payload: dict[str, Any]) -> GenerationRequest:
    """Worker side; the parent built the payload, so shape errors are protocol errors."""
    from assistant.engine.request import GenerationRequest, SamplingParams  # noqa: PLC0415

    try:
        messages = tuple((str(r), str(c)) for r, c in payload["messages"])
        return GenerationRequest(
            id=str(payload["id"]),
            messages=messages,
            max_tokens=int(payload["max_tokens"]),
            sampling=SamplingParams(**payload["sampling"]),
            stop=tuple(str(s) for s in payload["stop"]),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise ProtocolError(f"bad generate message: {err}") from err


@dataclass(frozen=True)
class Hello:
    """Worker → parent once the model is loaded and the sandbox is up."""

    pid: int
    model_id: str
    context_tokens: int
    load_ms: float
    sandbox: dict[str, Any] = field(default_factory=dict)

    def to_payload(self) -> dict[str, Any]:
        return {"type": "hello", **self.__dict__}

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Hello:
        sandbox = payload.get("sandbox", {})
        if not isinstance(sandbox, dict):
            raise ProtocolError("field 'sandbox' must be an object")
        return cls(
            pid=_int(payload, "pid"),
            model_id=_str(payload, "model_id", 200),
            context_tokens=_int(payload, "context_tokens"),
            load_ms=_num(payload, "load_ms"),
            sandbox=sandbox,
        )


def result_payload(result: GenerationResult) -> dict[str, Any]:
    return {
        "type": "result",
        "id": result.id,
        "text": result.text,
        "finish_reason": result.finish_reason,
        "prompt_tokens": result.usage.prompt_tokens,
        "completion_tokens": result.usage.completion_tokens,
        "queued_ms": result.timing.queued_ms,
        "first_token_ms": result.timing.first_token_ms,
        "total_ms": result.timing.total_ms,
        "tokens_per_s": result.timing.tokens_per_s,
    }


def result_from_payload(payload: dict[str, Any]) -> GenerationResult:
    from assistant.core.events import GenerationResult, Timing, Usage  # noqa: PLC0415

    reason = _str(payload, "finish_reason", 16)
    if reason not in ("stop", "length", "cancelled"):
        raise ProtocolError(f"unknown finish_reason {reason!r}")
    return GenerationResult(
        id=_str(payload, "id", 64),
        text=_str(payload, "text"),
        finish_reason=reason,
        usage=Usage(_int(payload, "prompt_tokens"), _int(payload, "completion_tokens")),
        timing=Timing(
            queued_ms=_num(payload, "queued_ms"),
            first_token_ms=_num(payload, "first_token_ms"),
            total_ms=_num(payload, "total_ms"),
            tokens_per_s=_num(payload, "tokens_per_s"),
        ),
    )


def error_from_payload(frame: dict[str, Any]) -> RequestError:
    """Parent side: an error frame as a contract error (an unknown code is engine_failure)."""
    code, message = frame.get("code"), str(frame.get("message", ""))[:500]
    if code == "prompt_too_long":
        return RequestError("prompt_too_long", message)
    if code == "invalid_request":
        return RequestError("invalid_request", message)
    return RequestError("engine_failure", message or "the worker failed")
