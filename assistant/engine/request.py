"""What the engine is asked to do: numpy-free, so the service process can build requests
for the worker without loading the engine's dependencies."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens. `temperature == 0` is greedy (deterministic)."""

    temperature: float = 0.0
    top_k: int = 0  # 0: no limit
    top_p: float = 1.0  # nucleus mass kept
    repetition_penalty: float = 1.0  # > 1 discourages tokens already in the sequence
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


@dataclass(frozen=True)
class GenerationRequest:
    id: str
    messages: tuple[tuple[str, str], ...]  # (role, content), system first when present
    max_tokens: int
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop: tuple[str, ...] = ()
    grammar: str | None = None  # Lark text (core/grammar.py) the reply must match
    calls: bool = False  # the grammar allows tool calls: read them from the reply
    # The scheduler's priority (higher first): the worker prefills waiting prompts in
    # this order, so an urgent request's prefill never queues behind ordinary ones.
    priority: int = 0
