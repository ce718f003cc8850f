"""Continuous batching: prompts in, streamed text and one final result per request out.

Requests join between decode steps (their prompt is prefilled alone, a chunk per step
between the others' decode steps, most urgent first, then their cache joins the batch) and
leave as soon as they finish, so a lone request runs at batch 1 with no added latency.
`generate` is a batch of one and uses the same code path. A step stopped for an urgent
request (`preempt`) changes nothing and is redone.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from assistant.core.events import (
    Delta,
    Event,
    Finished,
    GenerationResult,
    Timing,
    ToolCall,
    Usage,
)
from assistant.engine.constrain import RowConstraint, final_calls
from assistant.engine.detokenize import TextStream
from assistant.engine.engine import Engine
from assistant.engine.kvcache import KVCache
from assistant.engine.preempt import PreemptedError, Preemption
from assistant.engine.request import GenerationRequest
from assistant.engine.sampling import pick_token
from assistant.errors import RequestError

# Prompt tokens prefilled per step: long enough to keep prefill efficient, short enough
# that running rows stall for at most ~one prefill chunk and that a long prompt's
# activations stay small.
PREFILL_CHUNK = 128
# Tokens the repetition penalty looks back over.
PENALTY_WINDOW = 64


def generate(engine: Engine, request: GenerationRequest) -> Iterator[Event]:
    """Run one request alone, yielding its deltas and its final result."""
    batch = Batch(engine, max_batch=1)
    batch.add(request)
    while batch.busy:
        yield from batch.step()


@dataclass
class _Row:
    request: GenerationRequest
    prompt: list[int]
    stream: TextStream
    rng: np.random.Generator
    max_new: int
    added: float
    started: float = 0.0
    first_token: float = 0.0
    prefilled: int = 0
    cache: KVCache | None = None  # own cache while prefilling, then part of the batch
    generated: list[int] = field(default_factory=list)
    seq: int = 0
    cancelled: bool = False
    finish: str = ""
    constraint: RowConstraint | None = None  # the grammar the reply must follow, if any


class Batch:
    """Continuous batching over one Engine. Not thread-safe: one owner calls step()."""

    def __init__(self, engine: Engine, max_batch: int, kv_budget_bytes: int | None = None) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self.kv_budget = kv_budget_bytes
        self._pending: list[_Row] = []
        self._active: list[_Row] = []
        self._cache = engine.decoder.empty(0)
        self.preemption = Preemption()
        engine.decoder.run_options = self.preemption.options

    @property
    def busy(self) -> bool:
        return bool(self._pending or self._active)

    @property
    def active(self) -> int:
        return len(self._active)

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def ids(self) -> list[str]:
        """Ids of every request not yet finished, waiting or running."""
        return [r.request.id for r in (*self._pending, *self._active)]

    def add(self, request: GenerationRequest, queued_at: float | None = None) -> None:
        """Queue a request; raises RequestError(prompt_too_long) before any work is done."""
        prompt = self.engine.fit_prompt(request.messages, request.max_tokens)
        self.engine.check_prompt(len(prompt))
        max_new = min(request.max_tokens, self.engine.context_tokens - len(prompt))
        constraint = self.engine.constraints().start(request.grammar) if request.grammar else None
        stop = request.stop if constraint is None else ()  # the grammar says where it ends
        now = time.perf_counter()
        # Waiting prompts are prefilled by priority, then in arrival order: an urgent one
        # goes before ordinary ones (one partly prefilled keeps its cache and resumes).
        rank = request.priority
        at = next((i for i, r in enumerate(self._pending) if r.request.priority < rank), None)
        self._pending.insert(
            len(self._pending) if at is None else at,
            _Row(
                request=request,
                prompt=prompt,
                stream=TextStream(self.engine.tokenizer, stop),
                rng=np.random.default_rng(request.sampling.seed),
                max_new=max_new,
                added=queued_at if queued_at is not None else now,
                constraint=constraint,
            ),
        )

    def cancel(self, request_id: str) -> bool:
        for row in (*self._pending, *self._active):
            if row.request.id == request_id and not row.finish:
                row.cancelled = True
                return True
        return False

    def _has_room(self, row: _Row) -> bool:
        if len(self._active) >= self.max_batch:
            return False
        if self.kv_budget is None or not self._active:
            return True  # a lone request always runs
        per_token = self.engine.decoder.kv_bytes_per_token()
        in_use = sum(len(r.prompt) + r.max_new for r in self._active)
        return (in_use + len(row.prompt) + row.max_new) * per_token <= self.kv_budget

    def step(self) -> list[Event]:
        """Advance: prefill (part of) the next waiting prompt, then decode one token for
        every running request. Returns the events this produced.

        When a prompt's prefill completes, the step returns at once: its first token goes
        out now, and the running rows decode on the next step (one step's delay for them,
        a whole step less time-to-first-token for the newcomer)."""
        events: list[Event] = []
        for row in [r for r in self._pending if r.cancelled]:
            self._pending.remove(row)
            row.finish = "cancelled"
            events.append(self._finished(row))
        try:
            if self._pending and self._has_room(self._pending[0]):
                joined = len(self._active)
                self._prefill(self._pending[0], events)
                if len(self._active) > joined or events:
                    return events
            if self._active:
                self._decode(events)
        except PreemptedError:
            pass  # nothing changed: the next step, after the urgent prefill, redoes it
        return events

    def preempt(self, priority: int) -> bool:
        """From another thread, when a request of `priority` arrives: stop the graph run
        in progress if it is for less urgent requests only. Whether one was stopped."""
        return self.preemption.stop_below(priority)

    def _prefill(self, row: _Row, events: list[Event]) -> None:
        decoder = self.engine.decoder
        if not row.prefilled:
            row.started = time.perf_counter()
            reused = self.engine.reuse_prefix(row.prompt)
            if reused is not None:
                row.prefilled, row.cache = reused
        # In chunks even alone: a whole long prompt in one run holds its activations for
        # all its tokens (+40 MB at 273 tokens on the exact-GGUF graph, +15 MB in chunks
        # of 128), and measured no faster.
        piece = row.prompt[row.prefilled : row.prefilled + PREFILL_CHUNK]
        with self.preemption.run(row.request.priority):
            logits, row.cache = decoder.prefill(piece, row.cache)
        row.prefilled += len(piece)
        if row.prefilled < len(row.prompt):
            return
        self._pending.remove(row)
        self.engine.remember_prefix(row.prompt, row.cache)
        token = self._sample(row, logits.copy())
        row.first_token = time.perf_counter()
        cache, row.cache = row.cache, None
        self._cache = decoder.join(self._cache, cache, spare=self.max_batch - self.active - 1)
        self._active.append(row)
        self._accept(row, token, events)
        self._retire(events)

    def _decode(self, events: list[Event]) -> None:
        tokens = np.asarray([r.generated[-1] for r in self._active], dtype=np.int64)
        # Every active row has generated at least one token (its first, at prefill).
        with self.preemption.run(max(r.request.priority for r in self._active)):
            logits, self._cache = self.engine.decoder.step(self._cache, tokens)
        for i, row in enumerate(self._active):
            if not row.finish:
                self._accept(row, self._sample(row, logits[i]), events)
        self._retire(events)

    def _sample(self, row: _Row, logits: np.ndarray) -> int:
        seen = None
        if row.request.sampling.repetition_penalty != 1.0:
            seen = np.asarray((row.prompt + row.generated)[-PENALTY_WINDOW:], dtype=np.int64)
        if row.constraint is not None:
            row.constraint.mask(logits)
        return pick_token(logits, row.request.sampling, row.rng, seen)

    def _accept(self, row: _Row, token: int, events: list[Event]) -> None:
        if row.cancelled:
            row.finish = "cancelled"
            text = row.stream.flush()
        elif token in self.engine.stop_ids:
            row.generated.append(token)
            row.finish = "stop"
            text = row.stream.flush()
        else:
            row.generated.append(token)
            text = row.stream.push(token)
            complete = row.constraint is not None and row.constraint.advance(token)
            if row.stream.stopped:
                row.finish = "stop"
            elif complete or len(row.generated) >= row.max_new:
                row.finish = "stop" if complete else "length"
                text += row.stream.flush()
        # A tool call is not streamed as text: it arrives whole in the final result.
        if text and not (row.request.calls and row.stream.text.startswith("<")):
            events.append(Delta(row.request.id, row.seq, text))
            row.seq += 1

    def _retire(self, events: list[Event]) -> None:
        done = [i for i, r in enumerate(self._active) if r.finish]
        if not done:
            return
        for i in done:
            events.append(self._finished(self._active[i]))
        self._cache, order = self.engine.decoder.drop(self._cache, done)
        self._active = [self._active[i] for i in order]

    def _finished(self, row: _Row) -> Finished:
        now = time.perf_counter()
        # The end-of-turn token is not text, nor counted as a completion token's text.
        completion = len(row.generated)
        decode_s = now - row.first_token if row.first_token else 0.0
        text, reason = row.stream.text, row.finish
        calls: tuple[ToolCall, ...] = ()
        if row.constraint is not None:
            outcome = final_calls(row.constraint, text, reason, row.request.calls)
            if isinstance(outcome, RequestError):
                return Finished(row.request.id, error=outcome)
            text, reason, calls = outcome
        result = GenerationResult(
            id=row.request.id,
            text=text,
            finish_reason=reason,
            tool_calls=calls,
            usage=Usage(len(row.prompt), completion),
            timing=Timing(
                queued_ms=round(((row.started or now) - row.added) * 1000, 1),
                first_token_ms=round(((row.first_token or now) - row.added) * 1000, 1),
                total_ms=round((now - row.added) * 1000, 1),
                tokens_per_s=round(completion / decode_s, 1) if decode_s > 0 else 0.0,
            ),
        )
        return Finished(row.request.id, result=result)
