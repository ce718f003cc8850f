"""Input feeds for the decoder graph: empty caches and a whole-text prefill."""

from __future__ import annotations

from collections.abc import Sequence
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


def prefill_logits(session: Any, token_ids: Sequence[int]) -> npt.NDArray[np.float32]:
    """Logits [len(token_ids), vocab] of one row processed as a single prompt."""
    ids = np.asarray([token_ids], dtype=np.int64)
    feeds: dict[str, Any] = {INPUT_IDS: ids, ATTENTION_MASK: np.ones_like(ids)}
    feeds.update(empty_past(session, 1))
    (logits,) = session.run([LOGITS], feeds)
    return np.asarray(logits[0], dtype=np.float32)
