"""The KV cache of a batch, and the row copies that move it between buffers.

One array per layer and kind, [rows, kv_heads, capacity, head_dim]; row b's valid entries
are its first `lengths[b]` (assistant/engine/decoder.py runs the graph on it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


@dataclass
class KVCache:
    """The cache of a batch: per-layer keys and values and each row's cached length."""

    keys: list[F32]
    values: list[F32]
    lengths: I64  # [rows]
    binding: Any = None  # the IO binding holding these buffers (in-place mode)
    # In place: every layer's keys, then values, [slots, kv_heads, capacity, head_dim];
    # `keys` and `values` are views of their first `rows` rows (contiguous).
    slots: list[F32] | None = None

    @property
    def rows(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def capacity(self) -> int:
        return int(self.keys[0].shape[2]) if self.keys else 0

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.keys) + sum(a.nbytes for a in self.values)


def view_of(store: list[F32], rows: int, lengths: I64) -> KVCache:
    """The first `rows` rows of slot storage `store` (every layer's keys, then values)."""
    half = len(store) // 2
    views = [a[:rows] for a in store]
    return KVCache(keys=views[:half], values=views[half:], lengths=lengths, slots=store)


def moved_into(cache: KVCache, store: list[F32]) -> list[F32]:
    """`store` with the cached positions of every row of `cache` copied in."""
    copy_rows(cache, view_of(store, cache.rows, cache.lengths), range(cache.rows), 0)
    return store


def copy_rows(src: KVCache, dst: KVCache, rows: range, offset: int) -> None:
    """Rows `rows` of `src` into `dst`, each `offset` rows further down."""
    for row in rows:
        copy_row(src, row, dst, offset + row)


def copy_row(src: KVCache, row: int, dst: KVCache, to: int) -> None:
    """Row `row`'s cached positions (only those) into row `to` of `dst`."""
    length = int(src.lengths[row])
    for a, b in zip(src.keys + src.values, dst.keys + dst.values, strict=True):
        b[to, :, :length] = a[row, :, :length]
