"""Quality of a converted model against its FP32 reference: perplexity and top-1 agreement."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from assistant.model.feeds import run_in_chunks
from assistant.model.io_names import LOGITS

# Tokens per call when a text is run for its predictions.
CHUNK = 256
# A short original text for the check `prepare` runs; the benchmark uses a longer one.
BUILTIN_TEXT = (
    "Before winter arrives, it is worth spending an afternoon getting the house ready. "
    "Check the smoke alarms and replace their batteries, bleed the radiators so that they "
    "heat evenly, and fit foam strips around draughty doors and windows. Clear the leaves "
    "from the gutters, because blocked gutters send rain down the walls. In the kitchen, "
    "empty the fridge, wipe the shelves and throw away anything past its date. Turning the "
    "thermostat down by one degree saves energy, and closing the curtains at dusk keeps the "
    "warmth inside. A short list of these jobs, done every autumn, keeps a home comfortable "
    "and safe through the cold months."
)


@dataclass(frozen=True)
class QualityReport:
    """How closely a candidate model follows the reference on one text."""

    tokens: int
    ppl_reference: float
    ppl: float
    ppl_ratio: float
    top1_agreement: float

    def as_dict(self) -> dict[str, float]:
        """JSON-ready figures."""
        return {k: float(v) for k, v in asdict(self).items()}


def perplexity(logits: npt.NDArray[np.float32], token_ids: Sequence[int]) -> float:
    """exp(mean NLL) of token t+1 given tokens 0..t, over the whole sequence."""
    targets = np.asarray(token_ids[1:], dtype=np.int64)
    total = 0.0
    # Chunked log-softmax in float64: long texts times a 49k vocabulary are large.
    for start in range(0, len(targets), CHUNK):
        part = targets[start : start + CHUNK]
        total += _nll(logits[start : start + len(part)], part.tolist())
    return float(np.exp(total / len(targets)))


@dataclass(frozen=True)
class Predictions:
    """What a comparison needs of one model's run over a text: its perplexity and its top-1
    prediction per position. Kept instead of a session, a reference need not stay loaded
    while candidates are built and run (prepare's peak memory)."""

    ppl: float
    top1: npt.NDArray[np.int64]


def predictions(session: Any, token_ids: Sequence[int], chunk: int = CHUNK) -> Predictions:
    """Run `session` over the tokens as one sequence, `chunk` tokens per call with the KV
    cache carried over: [chunk, vocab] logits at a time instead of [len, vocab] (850 MB for
    1,400 tokens of a 152k vocabulary, and ORT's copy of it as much again)."""
    nll, tops = 0.0, []
    for start, (out,) in run_in_chunks(session, token_ids, [LOGITS], chunk):
        logits = np.asarray(out[0], dtype=np.float32)
        # Position t predicts token t + 1; the text's last position predicts nothing.
        targets = token_ids[start + 1 : start + 1 + len(logits)]
        nll += _nll(logits[: len(targets)], targets)
        tops.append(logits[: len(targets)].argmax(axis=-1))
    return Predictions(float(np.exp(nll / (len(token_ids) - 1))), np.concatenate(tops))


def _nll(logits: npt.NDArray[np.float32], targets: Sequence[int]) -> float:
    """Sum over positions of -log softmax(logits)[target], in float64."""
    chunk = logits.astype(np.float64)
    top = chunk.max(axis=-1, keepdims=True)
    log_z = np.log(np.exp(chunk - top).sum(axis=-1)) + top[:, 0]
    picked = chunk[np.arange(len(chunk)), np.asarray(targets, dtype=np.int64)]
    return float((log_z - picked).sum())


def compare(
    reference: Any | Predictions, candidate: Any, token_ids: Sequence[int]
) -> QualityReport:
    """Compare the candidate session's predictions with the reference (a session, or its
    predictions on the same tokens)."""
    ref = reference if isinstance(reference, Predictions) else predictions(reference, token_ids)
    cand = predictions(candidate, token_ids)
    return QualityReport(
        tokens=len(token_ids),
        ppl_reference=ref.ppl,
        ppl=cand.ppl,
        ppl_ratio=cand.ppl / ref.ppl,
        top1_agreement=float((ref.top1 == cand.top1).mean()),
    )
