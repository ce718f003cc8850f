"""Running the ONNX decoder (onnxruntime-genai layout): prefill one sequence, decode a batch.

The KV cache of a batch is one array per layer and kind, [rows, kv_heads, capacity,
head_dim]; row b's valid entries are its first `lengths[b]`. The graph's
GroupQueryAttention reads only each mask row's sum, writes row b's new token at index
`lengths[b]` and attends to nothing past it, so rows of different lengths share one step
(right padding) and each row's output equals running it alone.

Two ways to run a step, chosen once per model by a self-check at load:
- in place: the same buffer is bound (IO binding) as `past_key_values.*` and
  `present.*`, so GQA appends the new token where it lies; nothing is copied per token;
- copying: `present` comes back as a new, one-longer array each step (any genai graph).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from assistant.engine.kvcache import KVCache, copy_row, copy_rows, moved_into, view_of

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
LOG = logging.getLogger(__name__)
GROWTH = 256  # in-place capacity grows in steps of this many tokens (a copy each time)


class Decoder:
    """One InferenceSession and the names and shapes of its cache tensors."""

    def __init__(self, session: Any, inplace: bool | None = None) -> None:
        self.session = session
        inputs = {i.name: i for i in session.get_inputs()}
        self.n_layers = sum(
            1 for n in inputs if n.startswith("past_key_values.") and n.endswith(".key")
        )
        if self.n_layers == 0 or "input_ids" not in inputs or "attention_mask" not in inputs:
            raise ValueError("not a decoder in the onnxruntime-genai layout")
        shape = inputs["past_key_values.0.key"].shape
        self.n_kv_heads, self.head_dim = int(shape[1]), int(shape[3])
        self.keeps_last = "logits_to_keep" in inputs  # this project's graphs have it
        self._past = [
            (f"past_key_values.{i}.key", f"past_key_values.{i}.value") for i in range(self.n_layers)
        ]
        self._present = [(f"present.{i}.key", f"present.{i}.value") for i in range(self.n_layers)]
        self._out_names = ["logits"] + [name for pair in self._present for name in pair]
        self.vocab = _vocab(session)
        self.run_options: Any = None  # onnxruntime RunOptions for every run (preemption)
        self.inplace = bool(self.vocab) and (self._inplace_works() if inplace is None else inplace)
        LOG.debug("decoder: %d layers, in-place KV cache: %s", self.n_layers, self.inplace)

    def kv_bytes_per_token(self) -> int:
        return 2 * self.n_layers * self.n_kv_heads * self.head_dim * 4

    def empty(self, rows: int = 0, capacity: int = 0) -> KVCache:
        shape = (rows, self.n_kv_heads, capacity, self.head_dim)
        return KVCache(
            keys=[np.zeros(shape, np.float32) for _ in range(self.n_layers)],
            values=[np.zeros(shape, np.float32) for _ in range(self.n_layers)],
            lengths=np.zeros(rows, np.int64),
        )

    # --- running the graph ---------------------------------------------------------------

    def _run_copying(self, ids: I64, mask: I64, cache: KVCache, keep: int) -> F32:
        feed: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
        if self.keeps_last:
            feed["logits_to_keep"] = np.array(keep, dtype=np.int64)
        for (k_name, v_name), k, v in zip(self._past, cache.keys, cache.values, strict=True):
            feed[k_name], feed[v_name] = k, v
        out = self.session.run(self._out_names, feed, self.run_options)
        cache.keys, cache.values = out[1::2], out[2::2]
        logits: F32 = out[0]
        return logits

    def _bind(self, cache: KVCache) -> Any:
        """An IO binding with each layer's buffer as both its past and its present."""
        import onnxruntime as ort  # noqa: PLC0415

        binding = self.session.io_binding()
        binding.bind_output("logits")  # first: outputs come back in binding order
        for (past_k, past_v), (pres_k, pres_v), k, v in zip(
            self._past, self._present, cache.keys, cache.values, strict=True
        ):
            k_value = ort.OrtValue.ortvalue_from_numpy(k)  # shares k's memory
            v_value = ort.OrtValue.ortvalue_from_numpy(v)
            binding.bind_ortvalue_input(past_k, k_value)
            binding.bind_ortvalue_output(pres_k, k_value)
            binding.bind_ortvalue_input(past_v, v_value)
            binding.bind_ortvalue_output(pres_v, v_value)
        cache.binding = binding
        return binding

    def _run_inplace(self, ids: I64, mask: I64, cache: KVCache, keep: int) -> F32:
        import onnxruntime as ort  # noqa: PLC0415

        binding = cache.binding or self._bind(cache)
        binding.bind_cpu_input("input_ids", ids)
        binding.bind_cpu_input("attention_mask", mask)
        if self.keeps_last:
            binding.bind_cpu_input("logits_to_keep", np.array(keep, dtype=np.int64))
        # A new array every run, bound as the output: the logits' shape changes (a prompt
        # vs one token), and the caller may keep them. Reading them back through
        # `get_outputs()` instead wraps all 2 x layers + 1 outputs in Python objects on
        # every run: ~0.3 ms a decode step, 5-10 % of a step of the default model.
        rows, width = ids.shape
        logits: F32 = np.empty((rows, keep if self.keeps_last else width, self.vocab), np.float32)
        binding.bind_ortvalue_output("logits", ort.OrtValue.ortvalue_from_numpy(logits))
        self.session.run_with_iobinding(binding, self.run_options)
        return logits

    def _reserve(self, cache: KVCache, needed: int) -> KVCache:
        """In place: make room for `needed` positions (grown in steps; copies once)."""
        if needed <= cache.capacity:
            return cache
        capacity = -(-needed // GROWTH) * GROWTH
        slots = cache.slots[0].shape[0] if cache.slots else cache.rows
        store = moved_into(cache, _storage(self, slots, capacity))
        return view_of(store, cache.rows, cache.lengths)

    def prefill(self, ids: Sequence[int], cache: KVCache | None = None) -> tuple[F32, KVCache]:
        """Run a prompt (or the next chunk of one, given its cache) for one sequence.
        Returns the logits of its last position and the cache."""
        cache = cache or self.empty(1)
        past = int(cache.lengths[0])
        tokens = np.asarray([ids], dtype=np.int64)
        total = past + tokens.shape[1]
        mask = np.ones((1, total), dtype=np.int64)
        if self.inplace:
            cache = self._reserve(cache, total)
            logits = self._run_inplace(tokens, mask, cache, keep=1)
        else:
            logits = self._run_copying(tokens, mask, cache, keep=1)
        cache.lengths = cache.lengths + tokens.shape[1]
        return logits[0, -1], cache

    def step(self, cache: KVCache, tokens: I64) -> tuple[F32, KVCache]:
        """Decode one token for every row; returns logits [rows, vocab] and the cache
        (a new object when it had to grow)."""
        total = int(cache.lengths.max()) + 1
        # Row b sees its own `lengths[b]` cached entries plus the new token.
        mask = (np.arange(total) <= cache.lengths[:, None]).astype(np.int64)
        if self.inplace:
            cache = self._reserve(cache, total)
            logits = self._run_inplace(tokens.reshape(-1, 1), mask, cache, keep=1)
        else:
            if cache.capacity + 1 != total:  # a longer row left: drop the dead columns
                cache = self._slice(cache, total - 1)
            logits = self._run_copying(tokens.reshape(-1, 1), mask, cache, keep=1)
        cache.lengths = cache.lengths + 1
        return logits[:, -1], cache

    def copy_prefix(self, cache: KVCache, length: int, row: int = 0) -> KVCache:
        """A new one-row cache holding the first `length` positions of `row` of `cache`."""
        out = self.empty(1, length)
        for src, dst in zip(cache.keys + cache.values, out.keys + out.values, strict=True):
            dst[0, :, :length] = src[row, :, :length]
        out.lengths = np.array([length], dtype=np.int64)
        return out

    # --- batches -------------------------------------------------------------------------

    def _slice(self, cache: KVCache, width: int) -> KVCache:
        return KVCache(
            keys=[np.ascontiguousarray(k[:, :, :width]) for k in cache.keys],
            values=[np.ascontiguousarray(v[:, :, :width]) for v in cache.values],
            lengths=cache.lengths,
        )

    def join(self, cache: KVCache, other: KVCache, spare: int = 0) -> KVCache:
        """A batch holding the rows of both caches (padded to the wider one).

        In place, the batch lives in preallocated row slots (`spare` more than it needs,
        at most doubling): a newcomer's rows are copied into free slots, so joining costs
        its own cache, not the whole batch's."""
        if cache.rows == 0:
            return other
        rows = cache.rows + other.rows
        lengths = np.concatenate([cache.lengths, other.lengths])
        if not self.inplace:
            width = max(cache.capacity, other.capacity)
            joined = self.empty(rows, width)
            for part, offset in ((cache, 0), (other, cache.rows)):
                copy_rows(part, joined, range(part.rows), offset)
            joined.lengths = lengths
            return joined
        width = max(cache.capacity, -(-int(other.lengths.max()) // GROWTH) * GROWTH)
        store = cache.slots
        if store is None or store[0].shape[0] < rows or store[0].shape[2] < width:
            slots = rows + min(spare, cache.rows)
            store = moved_into(cache, _storage(self, slots, width))
        target = view_of(store, rows, lengths)
        copy_rows(other, target, range(other.rows), cache.rows)
        return target

    def drop(self, cache: KVCache, rows: Sequence[int]) -> tuple[KVCache, list[int]]:
        """The batch without `rows`, and the old index of each row left, in its new order.

        In place, the last rows move into the holes (a row's copy each, the batch keeps
        its slots); copying, the rest keep their order without columns no row uses."""
        gone = set(rows)
        keep = [i for i in range(cache.rows) if i not in gone]
        if not keep:
            return self.empty(0), []
        if not self.inplace:
            lengths = cache.lengths[keep]
            width = int(lengths.max())
            return KVCache(
                keys=[np.ascontiguousarray(k[keep, :, :width]) for k in cache.keys],
                values=[np.ascontiguousarray(v[keep, :, :width]) for v in cache.values],
                lengths=lengths,
            ), keep
        order = list(range(len(keep)))
        movers = [i for i in keep if i >= len(keep)]
        for hole, src in zip(sorted(i for i in gone if i < len(keep)), movers, strict=True):
            copy_row(cache, src, cache, hole)
            order[hole] = src
        store = cache.slots or [*cache.keys, *cache.values]
        return view_of(store, len(keep), cache.lengths[order]), order

    # --- choosing the mode ---------------------------------------------------------------

    def _inplace_works(self) -> bool:
        """Run a short prompt and two decode steps both ways; in place only if identical
        (a graph whose attention does not update a shared buffer would differ)."""
        probe = [1, 2, 3]
        results = []
        for mode in (False, True):
            self.inplace = mode
            try:
                logits, cache = self.prefill(probe)
                seen = [logits]
                for token in (4, 5):
                    step, cache = self.step(cache, np.array([token], dtype=np.int64))
                    seen.append(step[0])
                results.append(np.stack(seen))
            except Exception as err:  # any ORT refusal means: not in place
                LOG.info("in-place KV cache unavailable for this graph: %s", err)
                return False
        return bool(np.allclose(results[0], results[1], rtol=1e-4, atol=1e-4))


def _vocab(session: Any) -> int:
    """The logits' last dimension when the graph states it (0 if symbolic: then the
    in-place mode, which binds a logits array of known shape, is not used)."""
    out = next((o for o in session.get_outputs() if o.name == "logits"), None)
    size = out.shape[-1] if out is not None and out.shape else None
    return size if isinstance(size, int) else 0


# --- row slots (in place) ------------------------------------------------------------------


def _storage(decoder: Decoder, slots: int, capacity: int) -> list[F32]:
    cache = decoder.empty(slots, capacity)
    return [*cache.keys, *cache.values]
