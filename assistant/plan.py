"""The hardware plan: a pure function from (hardware facts, config, candidate models) to the
settings the engine runs with, each decision with a one-line reason.

No I/O here: `doctor` and the service feed it the probe's facts and the models present, and
tests feed it hand-written descriptions of a Raspberry Pi, a mini PC or a container.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from assistant.config import Config, EngineConfig, Precision
from assistant.config_schema import AUTO
from assistant.hardware import HardwareFacts
from assistant.plan_speed import decode_tok_s

# Below this estimated decode speed a reply feels stuck (a TTS engine starves, a user
# reading a 60-token answer waits > 4 s), so a bigger model is not worth it.
MIN_DECODE_TOK_S = 15.0
# Python, onnxruntime, the tokenizer and arenas: measured ~110-130 MB besides the weights.
RUNTIME_OVERHEAD_MB = 128
# Max threads: decode is memory-bandwidth bound, so beyond ~8 threads a small model only
# pays synchronisation cost.
MAX_THREADS = 8


@dataclass(frozen=True)
class ModelSpec:
    """The shape of a model, enough to estimate its memory and speed."""

    id: str
    params: int
    precision: Precision
    file_mb: float
    n_layers: int
    n_kv_heads: int
    head_dim: int
    context_max: int
    # Weight bytes one decode step reads (manifest `weight_bytes_per_token`); 0: unknown,
    # the file size stands in (plan_speed.py).
    weight_bytes_per_token: int = 0

    @property
    def decode_bytes(self) -> float:
        return float(self.weight_bytes_per_token or self.file_mb * 2**20)

    @property
    def kv_bytes_per_token(self) -> int:
        # Keys and values, every layer, float32.
        return 2 * self.n_layers * self.n_kv_heads * self.head_dim * 4


def _int8_spec(model_id: str, params: int, layers: int, kv_heads: int, ctx: int) -> ModelSpec:
    # Block-wise 8-bit weights with one fp32 scale per 32 weights: ~1.125 bytes a weight.
    return ModelSpec(model_id, params, "int8", params * 1.125 / 2**20, layers, kv_heads, 64, ctx)


DEFAULT_MODEL_ID = "smollm2-135m-instruct-int8"
# Shapes of Llama-family models users commonly prepare with `model prepare --gguf`; used
# only to describe what would fit. The plan chooses among the models actually present.
KNOWN_MODELS: tuple[ModelSpec, ...] = (
    _int8_spec(DEFAULT_MODEL_ID, 134_515_008, 30, 3, 8192),
    _int8_spec("smollm2-360m-instruct-int8", 361_821_120, 32, 5, 8192),
    _int8_spec("qwen2.5-0.5b-instruct-int8", 494_032_768, 24, 2, 32768),
    _int8_spec("llama-3.2-1b-instruct-int8", 1_235_814_400, 16, 8, 131072),
    _int8_spec("smollm2-1.7b-instruct-int8", 1_711_376_384, 24, 32, 8192),
)


@dataclass(frozen=True)
class TierRule:
    name: str
    min_cores: int
    min_memory_mb: int  # a little under the nominal size: "8 GB" machines report ~7.6 GiB
    context_tokens: int
    max_batch: int
    summary: str


# Context windows: Home Assistant's conversation agents send 2-4k tokens before the user
# says a word (instructions, the exposed entities, tool schemas) and ask for 8192, so
# every tier starts there (minimal at 4096) and memory alone halves it (`make_plan`).
TIERS: tuple[TierRule, ...] = (
    TierRule("large", 8, 14_500, 8192, 16, "≥ 8 cores and ≥ 16 GB: complex dialogue"),
    TierRule("standard", 4, 7_000, 8192, 8, "≥ 4 cores and ≥ 8 GB"),
    TierRule("basic", 2, 3_400, 8192, 8, "≥ 2 cores and ≥ 4 GB: basic functions"),
    TierRule("minimal", 1, 0, 4096, 2, "below 2 cores / 4 GB: short answers, expect delays"),
)


class PlanError(Exception):
    """The config asks for something no candidate can give (e.g. a model not present)."""


@dataclass(frozen=True)
class Plan:
    tier: str
    model: ModelSpec
    precision: Precision
    threads: int
    max_batch: int
    context_tokens: int
    kv_cache_mb: int  # KV memory shared by all rows of a batch
    worker_memory_mb: int
    est_decode_tok_s: float
    reasons: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tier": self.tier,
            "model": self.model.id,
            "precision": self.precision,
            "threads": self.threads,
            "max_batch": self.max_batch,
            "context_tokens": self.context_tokens,
            "kv_cache_mb": self.kv_cache_mb,
            "worker_memory_mb": self.worker_memory_mb,
            "est_decode_tok_s": round(self.est_decode_tok_s, 1),
            "reasons": dict(self.reasons),
        }


def tier_for(facts: HardwareFacts) -> TierRule:
    for rule in TIERS:
        if facts.cores >= rule.min_cores and facts.memory_mb >= rule.min_memory_mb:
            return rule
    return TIERS[-1]


def memory_budget_mb(facts: HardwareFacts) -> int:
    """Memory the engine may plan for: a container's limit is ours to use (most of it);
    on a shared host Home Assistant and the OS keep at least half."""
    if facts.memory_limit_mb is not None and facts.memory_limit_mb < facts.memory_total_mb:
        budget = facts.memory_limit_mb * 0.8
    else:
        budget = facts.memory_total_mb * 0.5
    return int(min(budget, facts.memory_available_mb * 0.8))


def _need_mb(model: ModelSpec, context: int) -> float:
    """Memory for the weights, the runtime and one full-context sequence."""
    return model.file_mb * 1.1 + RUNTIME_OVERHEAD_MB + context * model.kv_bytes_per_token / 2**20


def _threads(facts: HardwareFacts, eng: EngineConfig) -> tuple[int, str]:
    if eng.threads != AUTO:
        return int(eng.threads), "set in config (engine.threads)"
    spare = 1 if facts.cores >= 4 else 0
    threads = max(1, min(facts.cores - spare, MAX_THREADS))
    why = f"{facts.cores} usable core(s)"
    if facts.cpu_quota is not None:
        why += f" (cgroup quota {facts.cpu_quota:g} CPUs)"
    if spare:
        why += ", one left free for Home Assistant"
    if facts.cores - spare > MAX_THREADS:
        why += f", capped at {MAX_THREADS}: decode is memory-bound"
    return threads, why


def _named_model(pool: list[ModelSpec], config: Config, present: list[ModelSpec]) -> ModelSpec:
    pool = [m for m in pool if m.id == config.model.name]
    if not pool:
        names = ", ".join(sorted(m.id for m in present))
        raise PlanError(
            f"model.name: no model {config.model.name!r} with precision "
            f"{config.model.precision!r} is present (present: {names})"
        )
    return pool[0]


def _auto_model(
    pool: list[ModelSpec], tier: TierRule, budget: int, speed: Callable[[ModelSpec], float]
) -> tuple[ModelSpec, str]:
    small_ctx = min(tier.context_tokens, 1024)
    fitting = [m for m in pool if _need_mb(m, small_ctx) <= budget]
    fast = [m for m in fitting if speed(m) >= MIN_DECODE_TOK_S]
    # Prefer INT8 at equal size: block-wise 8-bit is measured nearly lossless and ~2.5x
    # faster than FP32 on this model.
    order = sorted(fast or fitting or pool, key=lambda m: (m.params, m.precision == "int8"))
    model = order[-1]
    if fast:
        return model, (
            f"the largest of {len(pool)} present that fits {budget} MB and "
            f"decodes ≥ {MIN_DECODE_TOK_S:g} tok/s (est. {speed(model):.0f})"
        )
    if fitting:
        return model, (
            f"fits {budget} MB, but est. {speed(model):.0f} tok/s is below "
            f"{MIN_DECODE_TOK_S:g}: answers will be slow"
        )
    return model, f"nothing present fits {budget} MB; may swap"


def _model(
    candidates: list[ModelSpec],
    config: Config,
    tier: TierRule,
    budget: int,
    speed: Callable[[ModelSpec], float],
) -> tuple[ModelSpec, str]:
    wanted = config.model.precision
    pool = [m for m in candidates if wanted in (AUTO, m.precision)]
    if config.model.name != AUTO:
        return _named_model(pool, config, candidates), "set in config (model.name)"
    if not pool:
        raise PlanError(f"model.precision: no {wanted} model is present")
    return _auto_model(pool, tier, budget, speed)


def _precision_reason(config: Config, model: ModelSpec) -> str:
    if config.model.precision != AUTO:
        return "set in config (model.precision)"
    if model.precision == "int8":
        return "block-wise 8-bit weights keep quality at a quarter of the FP32 bytes"
    return "the only precision present for this model"


def _context(
    eng: EngineConfig, tier: TierRule, model: ModelSpec, room_mb: float
) -> tuple[int, str]:
    per_token_mb = model.kv_bytes_per_token / 2**20
    if eng.context_tokens != AUTO:
        return int(eng.context_tokens), "set in config (engine.context_tokens)"
    context = min(tier.context_tokens, model.context_max)
    # Halve until one full-context sequence fits what is left after the weights.
    while context > 512 and context * per_token_mb > max(room_mb, 0):
        context //= 2
    return context, (
        f"{tier.name} tier default {tier.context_tokens}, model window "
        f"{model.context_max}, {per_token_mb * 1024:.0f} KB of KV cache per token"
    )


def _max_batch(eng: EngineConfig, tier: TierRule) -> tuple[int, str]:
    if eng.max_batch != AUTO:
        return int(eng.max_batch), "set in config (engine.max_batch)"
    return max(1, tier.max_batch), (
        f"{tier.name} tier; decode is memory-bound, so batched rows share weight reads"
    )


def _worker_memory(config: Config, model: ModelSpec, kv_mb: int) -> tuple[int, str]:
    if config.sandbox.memory_mb != AUTO:
        return int(config.sandbox.memory_mb), "set in config (sandbox.memory_mb)"
    need = model.file_mb * 1.1 + RUNTIME_OVERHEAD_MB + kv_mb
    return math.ceil(need * 1.25 / 64) * 64, "weights, runtime and KV budget plus 25% headroom"


def make_plan(
    facts: HardwareFacts, config: Config, candidates: tuple[ModelSpec, ...] | list[ModelSpec]
) -> Plan:
    """Decide model, precision, threads, batch, context and memory limits, with reasons."""
    if not candidates:
        raise PlanError("model.name: no model is available; run `edge-assistant model prepare`")
    eng, reasons = config.engine, {}
    tier = tier_for(facts)
    reasons["tier"] = (
        f"{facts.cores} usable core(s), {facts.memory_mb / 1024:.1f} GB ({tier.summary})"
    )
    threads, reasons["threads"] = _threads(facts, eng)
    budget = memory_budget_mb(facts)

    def speed(model: ModelSpec) -> float:
        return decode_tok_s(facts, threads, model.decode_bytes, model.n_layers)

    model, reasons["model"] = _model(list(candidates), config, tier, budget, speed)
    reasons["precision"] = _precision_reason(config, model)
    room_mb = budget - model.file_mb * 1.1 - RUNTIME_OVERHEAD_MB
    per_token_mb = model.kv_bytes_per_token / 2**20
    context, reasons["context_tokens"] = _context(eng, tier, model, room_mb)
    max_batch, reasons["max_batch"] = _max_batch(eng, tier)
    kv_mb = int(min(max(room_mb, context * per_token_mb), max_batch * context * per_token_mb))
    kv_mb = max(kv_mb, math.ceil(context * per_token_mb))
    reasons["kv_cache_mb"] = (
        f"one to {max_batch} sequences of {context} tokens, within a {budget} MB budget"
    )
    worker_mb, reasons["worker_memory_mb"] = _worker_memory(config, model, kv_mb)
    return Plan(
        tier=tier.name,
        model=model,
        precision=model.precision,
        threads=threads,
        max_batch=max_batch,
        context_tokens=context,
        kv_cache_mb=kv_mb,
        worker_memory_mb=worker_mb,
        est_decode_tok_s=speed(model),
        reasons=reasons,
    )
