"""Choosing the next token from logits: greedy, temperature, top-k, top-p, repetition penalty."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from assistant.engine.request import SamplingParams

Logits = npt.NDArray[np.float32]


def apply_repetition_penalty(logits: Logits, seen: npt.NDArray[np.int64], penalty: float) -> None:
    """The CTRL/HF rule, in place: shrink positive logits of seen tokens, grow negative ones."""
    if penalty == 1.0 or seen.size == 0:
        return
    ids = np.unique(seen)
    values = logits[ids]
    logits[ids] = np.where(values > 0, values / penalty, values * penalty)


def pick_token(
    logits: Logits,
    params: SamplingParams,
    rng: np.random.Generator,
    seen: npt.NDArray[np.int64] | None = None,
) -> int:
    """The next token id for one row of logits (the caller's array may be modified)."""
    if seen is not None:
        apply_repetition_penalty(logits, seen, params.repetition_penalty)
    if params.greedy:
        return int(np.argmax(logits))
    scaled = logits.astype(np.float64) / params.temperature
    if 0 < params.top_k < scaled.size:
        candidates = np.argpartition(scaled, -params.top_k)[-params.top_k :]
    else:
        candidates = np.arange(scaled.size)
    cand_logits = scaled[candidates]
    order = np.argsort(cand_logits)[::-1]
    candidates, cand_logits = candidates[order], cand_logits[order]
    probs = np.exp(cand_logits - cand_logits[0])
    probs /= probs.sum()
    if params.top_p < 1.0:
        # Keep the smallest prefix whose mass reaches top_p (always at least one token).
        keep = int(np.searchsorted(np.cumsum(probs), params.top_p) + 1)
        candidates, probs = candidates[:keep], probs[:keep] / probs[:keep].sum()
    return int(candidates[rng.choice(candidates.size, p=probs)])
