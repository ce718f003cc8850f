"""A `Request` as the engine's `GenerationRequest`: the chat to render, the reply budget and
how to sample. Checks what every front end would otherwise check on its own.

The chat is `messages` as given (a whole conversation, as HTTP APIs send it) or, for a
`text` request, the system prompt, the session's turns and the new text. A request without
a system turn gets the configured one. Tools, tool calls, tool results and an output schema
are written into the turns by `tool_prompt`. Sampling fields left None take the configured
temperature or the engine's neutral defaults (`SamplingParams`), so each default is written
once.
"""

from __future__ import annotations

from typing import TypeVar

from assistant.config import EngineConfig
from assistant.core.constrained import DEFAULT_POLICY, ToolPolicy, request_constraint
from assistant.core.request import Message, Request
from assistant.core.sessions import Turn
from assistant.core.tool_prompt import render_messages
from assistant.engine.request import GenerationRequest, SamplingParams
from assistant.errors import RequestError

MAX_TEXT = 32_000  # characters of one message (far beyond any small model's window)
MAX_MESSAGES = 256  # turns of a `messages` request
MAX_STOP = 4  # stop strings per request
MAX_STOP_CHARS = 64

Chat = tuple[tuple[str, str], ...]
T = TypeVar("T")


def generation_request(
    request: Request,
    engine: EngineConfig,
    history: tuple[Turn, ...] = (),
    tools: ToolPolicy = DEFAULT_POLICY,
) -> GenerationRequest:
    """The engine's request, or RequestError(invalid_request) naming what is wrong."""
    _check(request)
    max_tokens = min(request.max_tokens or engine.max_tokens, engine.max_tokens)
    constraint = request_constraint(request, engine.system_prompt, tools)
    return GenerationRequest(
        id=request.id,
        messages=chat(request, engine.system_prompt, history),
        max_tokens=max_tokens,
        sampling=sampling(request, engine),
        stop=request.sampling.stop,
        grammar=constraint.grammar,
        calls=constraint.calls,
    )


def chat(request: Request, default_system: str, history: tuple[Turn, ...] = ()) -> Chat:
    """(role, content) pairs, system first when there is one."""
    system = request.system if request.system is not None else default_system
    messages = list(request.messages)
    if not messages:
        for turn in history:
            messages += [Message("user", turn.user), Message("assistant", turn.assistant)]
        messages.append(Message("user", request.text or ""))
    return render_messages(messages, request.tools, system, request.output_schema)


def sampling(request: Request, engine: EngineConfig) -> SamplingParams:
    """The request's overrides on top of the configured temperature and neutral defaults."""
    asked = request.sampling
    base = SamplingParams(temperature=engine.temperature)
    return SamplingParams(
        temperature=_pick(asked.temperature, base.temperature),
        top_k=_pick(asked.top_k, base.top_k),
        top_p=_pick(asked.top_p, base.top_p),
        repetition_penalty=_pick(asked.repeat_penalty, base.repetition_penalty),
        seed=asked.seed,
    )


def _pick(asked: T | None, default: T) -> T:
    return default if asked is None else asked


def _check(request: Request) -> None:
    if request.text is not None and request.messages:
        raise RequestError("invalid_request", "give either text or messages, not both")
    contents = [m.content for m in request.messages] or [request.text or ""]
    if request.text is not None and not request.text.strip():
        raise RequestError("invalid_request", "empty text")
    if not request.messages and request.text is None:
        raise RequestError("invalid_request", "no text and no messages")
    if len(request.messages) > MAX_MESSAGES:
        raise RequestError("invalid_request", f"more than {MAX_MESSAGES} messages")
    if any(len(content) > MAX_TEXT for content in contents):
        raise RequestError("invalid_request", f"text is longer than {MAX_TEXT:,} characters")
    stop = request.sampling.stop
    if len(stop) > MAX_STOP or any(not s or len(s) > MAX_STOP_CHARS for s in stop):
        message = f"at most {MAX_STOP} stop strings of 1-{MAX_STOP_CHARS} characters"
        raise RequestError("invalid_request", message)
    if request.max_tokens is not None and request.max_tokens < 1:
        raise RequestError("invalid_request", "max_tokens must be at least 1")
