"""Typed messages between the service and its worker; JSON objects on `assistant.ipc` frames.

Every frame is a dataclass with `to_payload` and `from_payload`; nothing past the decoder
handles a raw dict. `from_payload` validates types and bounds every field and raises
`ProtocolError`: the worker runs untrusted input through native code, so what it sends
is untrusted too, and the worker checks the parent's frames as well.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Literal, TypeVar, get_args

from assistant.core.events import Delta, GenerationResult, Timing, Usage
from assistant.engine.request import GenerationRequest
from assistant.errors import RequestError
from assistant.ipc import ProtocolError
from assistant.worker.fields import (
    MAX_TEXT,
    MAX_TOKENS,
    Payload,
    calls_payload,
    check_type,
    get_bool,
    get_int,
    get_num,
    get_object,
    get_optional_int,
    get_optional_str,
    get_request,
    get_str,
    get_tool_calls,
    json_ready,
)

T = TypeVar("T")
FinishReason = Literal["stop", "length", "cancelled", "tool_calls"]
WorkerErrorCode = Literal["prompt_too_long", "invalid_request", "engine_failure"]


@dataclass(frozen=True)
class StartSpec:
    """Parent → worker, first frame: what to load and how to confine itself."""

    TYPE: ClassVar[str] = "start"
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

    def to_payload(self) -> Payload:
        return {"type": self.TYPE, **asdict(self)}

    @classmethod
    def from_payload(cls, payload: Payload) -> StartSpec:
        check_type(payload, cls.TYPE)
        return cls(
            model_path=get_str(payload, "model_path", 4096),
            threads=get_int(payload, "threads", maximum=1024),
            context_tokens=get_int(payload, "context_tokens", maximum=MAX_TOKENS),
            max_batch=get_int(payload, "max_batch", minimum=1, maximum=1024),
            kv_budget_bytes=get_int(payload, "kv_budget_bytes"),
            sandbox=get_bool(payload, "sandbox", True),
            memory_bytes=get_optional_int(payload, "memory_bytes"),
            scratch_dir=get_optional_str(payload, "scratch_dir", 4096),
            debug_hang_text=get_optional_str(payload, "debug_hang_text", 256),
        )


@dataclass(frozen=True)
class Hello:
    """Worker → parent once the model is loaded and the sandbox is up."""

    TYPE: ClassVar[str] = "hello"
    pid: int
    model_id: str
    context_tokens: int
    load_ms: float
    sandbox: dict[str, Any] = field(default_factory=dict)

    def to_payload(self) -> Payload:
        return {"type": self.TYPE, **asdict(self)}

    @classmethod
    def from_payload(cls, payload: Payload) -> Hello:
        check_type(payload, cls.TYPE)
        return cls(
            pid=get_int(payload, "pid", minimum=1),
            model_id=get_str(payload, "model_id", 200),
            context_tokens=get_int(payload, "context_tokens", maximum=MAX_TOKENS),
            load_ms=get_num(payload, "load_ms"),
            sandbox=get_object(payload, "sandbox"),
        )


@dataclass(frozen=True)
class GenerateFrame:
    """Parent → worker: one request to add to the running batch."""

    TYPE: ClassVar[str] = "generate"
    request: GenerationRequest

    def to_payload(self) -> Payload:
        return {"type": self.TYPE, **json_ready(asdict(self.request))}

    @classmethod
    def from_payload(cls, payload: Payload) -> GenerateFrame:
        check_type(payload, cls.TYPE)
        return cls(get_request(payload))


@dataclass(frozen=True)
class CancelFrame:
    """Parent → worker: stop a request; it still ends with a result ("cancelled")."""

    TYPE: ClassVar[str] = "cancel"
    id: str

    def to_payload(self) -> Payload:
        return {"type": self.TYPE, "id": self.id}

    @classmethod
    def from_payload(cls, payload: Payload) -> CancelFrame:
        check_type(payload, cls.TYPE)
        return cls(get_str(payload, "id", 64))


@dataclass(frozen=True)
class ShutdownFrame:
    """Parent → worker: exit now (requests still held get no reply; the parent answers)."""

    TYPE: ClassVar[str] = "shutdown"

    def to_payload(self) -> Payload:
        return {"type": self.TYPE}

    @classmethod
    def from_payload(cls, payload: Payload) -> ShutdownFrame:
        check_type(payload, cls.TYPE)
        return cls()


@dataclass(frozen=True)
class DeltaFrame:
    """Worker → parent: new text of one request."""

    TYPE: ClassVar[str] = "delta"
    id: str
    seq: int
    text: str

    @classmethod
    def from_event(cls, event: Delta) -> DeltaFrame:
        return cls(event.id, event.seq, event.text)

    def to_payload(self) -> Payload:
        return {"type": self.TYPE, "id": self.id, "seq": self.seq, "text": self.text}

    @classmethod
    def from_payload(cls, payload: Payload) -> DeltaFrame:
        check_type(payload, cls.TYPE)
        return cls(get_str(payload, "id", 64), get_int(payload, "seq"), get_str(payload, "text"))


@dataclass(frozen=True)
class ResultFrame:
    """Worker → parent: the end of one request, with its tool calls (constrained decoding)."""

    TYPE: ClassVar[str] = "result"
    result: GenerationResult

    def to_payload(self) -> Payload:
        r = self.result
        return {
            "type": self.TYPE,
            "id": r.id,
            "text": r.text,
            "finish_reason": r.finish_reason,
            **asdict(r.usage),
            **asdict(r.timing),
            "tool_calls": calls_payload(r.tool_calls),
        }

    @classmethod
    def from_payload(cls, payload: Payload) -> ResultFrame:
        check_type(payload, cls.TYPE)
        reason = get_str(payload, "finish_reason", 16)
        if reason not in get_args(FinishReason):
            raise ProtocolError(f"unknown finish_reason {reason!r}")
        usage = Usage(get_int(payload, "prompt_tokens"), get_int(payload, "completion_tokens"))
        timing = Timing(
            queued_ms=get_num(payload, "queued_ms"),
            first_token_ms=get_num(payload, "first_token_ms"),
            total_ms=get_num(payload, "total_ms"),
            tokens_per_s=get_num(payload, "tokens_per_s"),
        )
        text = get_str(payload, "text", MAX_TEXT)
        calls = get_tool_calls(payload, "tool_calls")
        rid = get_str(payload, "id", 64)
        return cls(GenerationResult(rid, text, reason, usage, timing, tool_calls=calls))


@dataclass(frozen=True)
class ErrorFrame:
    """Worker → parent: one request failed; `code` is one of the worker's contract codes."""

    TYPE: ClassVar[str] = "error"
    id: str
    code: WorkerErrorCode
    message: str

    @classmethod
    def from_error(cls, request_id: str, error: RequestError) -> ErrorFrame:
        code = error.code if error.code in get_args(WorkerErrorCode) else "engine_failure"
        return cls(request_id, code, error.message[:500])  # type: ignore[arg-type]

    def to_error(self) -> RequestError:
        return RequestError(self.code, self.message or "the worker failed")

    def to_payload(self) -> Payload:
        return {"type": self.TYPE, "id": self.id, "code": self.code, "message": self.message}

    @classmethod
    def from_payload(cls, payload: Payload) -> ErrorFrame:
        check_type(payload, cls.TYPE)
        code = get_str(payload, "code", 32)
        if code not in get_args(WorkerErrorCode):
            raise ProtocolError(f"unknown worker error code {code!r}")
        message = get_str(payload, "message", 500)
        return cls(get_str(payload, "id", 64), code, message)  # type: ignore[arg-type]


@dataclass(frozen=True)
class FatalFrame:
    """Worker → parent, last frame: the worker cannot go on (e.g. the model did not load)."""

    TYPE: ClassVar[str] = "fatal"
    message: str

    def to_payload(self) -> Payload:
        return {"type": self.TYPE, "message": self.message[:500]}

    @classmethod
    def from_payload(cls, payload: Payload) -> FatalFrame:
        check_type(payload, cls.TYPE)
        return cls(get_str(payload, "message", 500))


ToWorker = GenerateFrame | CancelFrame | ShutdownFrame  # the parent's frames after `start`
FromWorker = DeltaFrame | ResultFrame | ErrorFrame | FatalFrame  # the worker's after `hello`
_TO_WORKER: dict[str, type[ToWorker]] = {
    c.TYPE: c for c in (GenerateFrame, CancelFrame, ShutdownFrame)
}
_FROM_WORKER: dict[str, type[FromWorker]] = {
    c.TYPE: c for c in (DeltaFrame, ResultFrame, ErrorFrame, FatalFrame)
}


def decode_to_worker(payload: Payload) -> ToWorker:
    """The worker's decoder for every frame after `start`."""
    return _lookup(_TO_WORKER, payload).from_payload(payload)


def decode_from_worker(payload: Payload) -> FromWorker:
    """The parent's decoder for every frame after `hello`."""
    return _lookup(_FROM_WORKER, payload).from_payload(payload)


def decode_startup_reply(payload: Payload) -> Hello | FatalFrame:
    """The parent's decoder for the worker's first frame."""
    if payload.get("type") == FatalFrame.TYPE:
        return FatalFrame.from_payload(payload)
    return Hello.from_payload(payload)


def _lookup(table: dict[str, type[T]], payload: Payload) -> type[T]:
    kind = payload.get("type")
    frame = table.get(kind) if isinstance(kind, str) else None
    if frame is None:
        raise ProtocolError(f"unexpected frame type {str(kind)[:32]!r}")
    return frame
