"""Running the ONNX decoder (onnxruntime-genai layout): prefill one sequence, decode a batch.

The KV cache of a batch is one array per layer and kind, [rows, kv_heads, P, head_dim],
where P is the longest row; row b's valid entries are its first `lengths[b]`. The graph's
GroupQueryAttention reads only each mask row's sum, writes row b's new token at index
`lengths[b]` and attends to nothing past it, so rows of different lengths share one step
(right padding) and each row's output equals running it alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


@dataclass
class KVCache:
    """The cache of a batch: per-layer keys and values and each row's cached length."""

    keys: list[F32]
    values: list[F32]
    lengths: I64  # [rows]

    @property
    def rows(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.keys) + sum(a.nbytes for a in self.values)

    def used_bytes(self) -> int:
        """Bytes holding real entries (what the plan's KV budget counts)."""
        width = self.keys[0].shape[2] if self.keys and self.keys[0].shape[2] else 1
        return int(self.nbytes * int(self.lengths.sum()) / max(1, self.rows * width))


class Decoder:
    """One InferenceSession and the names and shapes of its cache tensors."""

    def __init__(self, session: ort.InferenceSession) -> None:
        self.session = session
        inputs = {i.name: i for i in session.get_inputs()}
        self.n_layers = sum(
            1 for n in inputs if n.startswith("past_key_values.") and n.endswith(".key")
        )
        if self.n_layers == 0 or "input_ids" not in inputs or "attention_mask" not in inputs:
            raise ValueError("not a decoder in the onnxruntime-genai layout")
        shape = inputs["past_key_values.0.key"].shape
        self.n_kv_heads, self.head_dim = int(shape[1]), int(shape[3])
        self._past_names = [
            name
            for i in range(self.n_layers)
            for name in (f"past_key_values.{i}.key", f"past_key_values.{i}.value")
        ]
        # Requested by name: the graph may list all present keys before the values.
        self._out_names = ["logits"] + [
            name
            for i in range(self.n_layers)
            for name in (f"present.{i}.key", f"present.{i}.value")
        ]
        self.vocab = (
            int(session.get_outputs()[0].shape[2])
            if isinstance(session.get_outputs()[0].shape[2], int)
            else 0
        )

    def kv_bytes_per_token(self) -> int:
        return 2 * self.n_layers * self.n_kv_heads * self.head_dim * 4

    def empty(self, rows: int = 0) -> KVCache:
        shape = (rows, self.n_kv_heads, 0, self.head_dim)
        return KVCache(
            keys=[np.zeros(shape, np.float32) for _ in range(self.n_layers)],
            values=[np.zeros(shape, np.float32) for _ in range(self.n_layers)],
            lengths=np.zeros(rows, np.int64),
        )

    def _run(self, ids: I64, mask: I64, cache: KVCache) -> F32:
        feed: dict[str, npt.NDArray[np.generic]] = {"input_ids": ids, "attention_mask": mask}
        for i in range(self.n_layers):
            feed[self._past_names[2 * i]] = cache.keys[i]
            feed[self._past_names[2 * i + 1]] = cache.values[i]
        out = self.session.run(self._out_names, feed)
        cache.keys = out[1::2]
        cache.values = out[2::2]
        logits: F32 = out[0]
        return logits

    def prefill(self, ids: Sequence[int], cache: KVCache | None = None) -> tuple[F32, KVCache]:
        """Run a prompt (or the next chunk of one, given its cache) for one sequence.
        Returns the logits of its last position and the cache."""
        cache = cache or self.empty(1)
        past = int(cache.lengths[0])
        tokens = np.asarray([ids], dtype=np.int64)
        mask = np.ones((1, past + tokens.shape[1]), dtype=np.int64)
        logits = self._run(tokens, mask, cache)
        cache.lengths = cache.lengths + tokens.shape[1]
        return logits[0, -1], cache

    def step(self, cache: KVCache, tokens: I64) -> F32:
        """Decode one token for every row; returns logits [rows, vocab]."""
        width = int(cache.keys[0].shape[2])
        # Row b sees its own `lengths[b]` cached entries plus the new token.
        mask = (np.arange(width + 1) <= cache.lengths[:, None]).astype(np.int64)
        logits = self._run(tokens.reshape(-1, 1), mask, cache)
        cache.lengths = cache.lengths + 1
        self._trim(cache)
        return logits[:, 0]

    @staticmethod
    def _trim(cache: KVCache) -> None:
        """Drop columns no row uses any more (after the longest row left)."""
        longest = int(cache.lengths.max()) if cache.rows else 0
        if cache.keys and cache.keys[0].shape[2] > longest:
            cache.keys = [np.ascontiguousarray(k[:, :, :longest]) for k in cache.keys]
            cache.values = [np.ascontiguousarray(v[:, :, :longest]) for v in cache.values]

    @staticmethod
    def join(cache: KVCache, other: KVCache) -> KVCache:
        """A batch holding the rows of both caches (padded to the longer width)."""
        width = max(cache.keys[0].shape[2], other.keys[0].shape[2])

        def pad(a: F32) -> F32:
            extra = width - a.shape[2]
            return a if extra == 0 else np.pad(a, ((0, 0), (0, 0), (0, extra), (0, 0)))

        return KVCache(
            keys=[
                np.concatenate([pad(a), pad(b)])
                for a, b in zip(cache.keys, other.keys, strict=True)
            ],
            values=[
                np.concatenate([pad(a), pad(b)])
                for a, b in zip(cache.values, other.values, strict=True)
            ],
            lengths=np.concatenate([cache.lengths, other.lengths]),
        )

    @classmethod
    def drop(cls, cache: KVCache, rows: Sequence[int]) -> KVCache:
        """The batch without `rows`."""
        keep = np.setdiff1d(np.arange(cache.rows), np.asarray(rows, dtype=np.int64))
        out = KVCache(
            keys=[k[keep] for k in cache.keys],
            values=[v[keep] for v in cache.values],
            lengths=cache.lengths[keep],
        )
        cls._trim(out)
        return out
