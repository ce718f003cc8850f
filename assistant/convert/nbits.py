"""Graph pieces for exactly-mapped GGUF weights: MatMulNBits plus a small side term.

    [y | s] = MatMulNBits(x', codes + side rows)     one kernel call, prepacked
    y + s @ side                                     one small fp32 MatMul, one Add

- Types with a minimum (Q4_1, Q4_K...) are w = scale * (code - zero) + offset per block:
  the offset part is blocksum(x) @ offsets, what llama.cpp computes for Q4_1 x Q8_1 from
  the activations' block sums (leaving it out is a 40 % error). The block sums come out of
  the same MatMulNBits call as extra output rows (weight 1 over block j, 0 elsewhere), so
  they cost no node of their own: at level 0 they are fp32 sums, at level 4 the sums of
  the int8-rounded x, like llama.cpp's.
- Shifted channels (`Shifts`): an input channel with outlier activations arrives divided
  by 2**p (the division is folded upstream, e.g. into the RMSNorm gamma), so that at level 4
  it no longer sets the int8 step of its whole block; one more side row reads x'_c and
  adds back (2**p - 1) * x'_c * w[:, c]. The function is unchanged; only rounding moves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from assistant.convert.ggml_blocks import BlockMatrix

# MatMulNBits' compute types on CPU (ORT 1.32): 0 = fp32 activations (exact, the fastest for
# long prompts on 4-bit), 4 = int8 activations (the fastest at one token; rounds x per block).
EXACT_LEVEL = 0
INT8_ACTIVATIONS_LEVEL = 4


@dataclass(frozen=True)
class Shifts:
    """Input channels that reach the matmul divided by 2**power."""

    channels: npt.NDArray[np.int64]
    powers: npt.NDArray[np.int64]

    def divisors(self) -> npt.NDArray[np.float32]:
        """2**power per channel (exact in fp32)."""
        return np.ldexp(np.float32(1), self.powers.astype(np.int32)).astype(np.float32)


class Builder(Protocol):
    """What nbits needs of a graph builder (graph._GraphBuilder)."""

    def weight(self, name: str, array: npt.NDArray[np.generic]) -> str: ...

    def node(
        self, op: str, inputs: list[str], name: str, n_out: int = 1, **attrs: Any
    ) -> list[str]: ...


def side_rows(m: BlockMatrix, shifts: Shifts | None) -> tuple[BlockMatrix, npt.NDArray[np.float32]]:
    """`m` with the side rows appended ([N + S, K]) and the side matrix [S, N] that maps the
    side outputs back onto y; S = 0 when the encoding needs no side term."""
    n, k = m.shape
    n_blocks = k // m.block
    selectors: list[npt.NDArray[np.bool_]] = []
    side: list[npt.NDArray[np.float32]] = []
    if m.offsets is not None:
        selectors.extend(np.repeat(np.eye(n_blocks, dtype=bool), m.block, axis=1))
        side.append(m.offsets.T)
    if shifts is not None and len(shifts.channels):
        one_hot = np.zeros((len(shifts.channels), k), dtype=bool)
        one_hot[np.arange(len(shifts.channels)), shifts.channels] = True
        selectors.extend(one_hot)
        weights = m.dequantize()[:, shifts.channels].T  # [c, N]
        side.append(weights * (shifts.divisors() - np.float32(1))[:, None])
    if not selectors:
        return m, np.zeros((0, n), np.float32)
    # Weight 1 where selected, 0 elsewhere: code zero + 1 at scale 1 (exact in every kernel).
    zero = 1 << (m.bits - 1)
    chosen = np.stack(selectors)
    codes = np.where(chosen, zero + 1, zero).astype(np.uint8)
    scales = np.ones((len(chosen), n_blocks), np.float32)
    # Offsets stay out: the side matrix carries them.
    extended = BlockMatrix(
        m.bits, m.block, np.concatenate([m.codes, codes]), np.concatenate([m.scales, scales]), None
    )
    return extended, np.ascontiguousarray(np.concatenate(side).astype(np.float32))


def nbits_linear(
    b: Builder,
    x: str,
    m: BlockMatrix,
    name: str,
    accuracy_level: int,
    shifts: Shifts | None = None,
) -> str:
    """x @ w.T for w = `m` ([N, K]); x is [batch, seq, K], shifted channels pre-divided."""
    n, k = m.shape
    extended, side = side_rows(m, shifts)
    codes = b.weight(f"{name}.qweight", extended.packed())
    scales = b.weight(f"{name}.scales", np.ascontiguousarray(extended.scales.reshape(-1)))
    (y,) = b.node(
        "MatMulNBits",
        [x, codes, scales],
        f"/{name}/MatMulNBits",
        K=k,
        N=extended.shape[0],
        bits=m.bits,
        block_size=m.block,
        accuracy_level=accuracy_level,
    )
    if not len(side):
        return y
    sizes = b.weight(f"{name}.side_split", np.array([n, len(side)], np.int64))
    main, sums = b.node("Split", [y, sizes], f"/{name}/side/Split", n_out=2, axis=-1)
    (term,) = b.node("MatMul", [sums, b.weight(f"{name}.side", side)], f"/{name}/side/MatMul")
    (out,) = b.node("Add", [main, term], f"/{name}/side/Add")
    return out
