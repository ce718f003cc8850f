"""Input feeds for the decoder graph: empty caches, and one text run whole or in chunks."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from assistant.model.io_names import ATTENTION_MASK, INPUT_IDS, LOGITS, LOGITS_TO_KEEP


def every_position(session: Any) -> dict[str, npt.NDArray[np.int64]]:
    """`logits_to_keep = 0` (logits for all positions) when the graph has that input."""
    names = {spec.name for spec in session.get_inputs()}
    return {LOGITS_TO_KEEP: np.array(0, dtype=np.int64)} if LOGITS_TO_KEEP in names else {}


def empty_past(session: Any, batch: int) -> dict[str, npt.NDArray[Any]]:
    """Zero-length `past_key_values.*` arrays shaped from the session's own inputs, plus
    `every_position` (so a prefill gets the logits of every position)."""
    feeds: dict[str, npt.NDArray[Any]] = dict(every_position(session))
    for spec in session.get_inputs():
        if spec.name.startswith("past_key_values."):
            _, heads, _, head_dim = spec.shape
            feeds[spec.name] = np.zeros((batch, int(heads), 0, int(head_dim)), dtype=np.float32)
    return feeds


def run_in_chunks(
    session: Any,
    token_ids: Sequence[int],
    outputs: Sequence[str],
    chunk: int,
    every_logit: bool = True,
) -> Iterator[tuple[int, list[npt.NDArray[Any]]]]:
    """Run one row over `token_ids` as a single sequence, `chunk` tokens a call with the KV
    cache carried from call to call; yields each call's first position and its `outputs`.
    A long text's activations and logits are then held a chunk at a time. Without
    `every_logit` a graph with `logits_to_keep` computes the LM head on the last row only."""
    feeds: dict[str, Any] = empty_past(session, 1)
    if not every_logit and LOGITS_TO_KEEP in feeds:
        feeds[LOGITS_TO_KEEP] = np.array(1, dtype=np.int64)
    present = [o.name for o in session.get_outputs() if o.name.startswith("present.")]
    for start in range(0, len(token_ids), chunk):
        ids = np.asarray([token_ids[start : start + chunk]], dtype=np.int64)
        feeds[INPUT_IDS] = ids
        feeds[ATTENTION_MASK] = np.ones((1, start + ids.shape[1]), dtype=np.int64)
        values = session.run([*outputs, *present], feeds)
        for name, value in zip(present, values[len(outputs) :], strict=True):
            feeds[name.replace("present.", "past_key_values.", 1)] = value
        yield start, values[: len(outputs)]


def prefill_logits(session: Any, token_ids: Sequence[int]) -> npt.NDArray[np.float32]:
    """Logits [len(token_ids), vocab] of one row processed as a single prompt."""
    ((_, (logits,)),) = run_in_chunks(session, token_ids, [LOGITS], len(token_ids))
    return np.asarray(logits[0], dtype=np.float32)
