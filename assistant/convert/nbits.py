"""Graph pieces for exactly-mapped GGUF weights: MatMulNBits plus the block-offset term.

    y = MatMulNBits(x, codes, scales)            scale * (code - zero) per block, prepacked
      + ReduceSum(x in blocks) @ offsets         only for types with a minimum (Q4_1, Q4_K...)

The offset term is what llama.cpp computes for Q4_1 x Q8_1 from the activations' block
sums; leaving it out is a 40 % error. It costs one small fp32 MatMul ([K / block, N]).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from assistant.convert.ggml_blocks import BlockMatrix

# MatMulNBits' compute types on CPU (ORT 1.32): 0 = fp32 activations (exact, the fastest for
# long prompts on 4-bit), 4 = int8 activations (the fastest at one token; rounds x per block).
EXACT_LEVEL = 0
INT8_ACTIVATIONS_LEVEL = 4


class Builder(Protocol):
    """What nbits needs of a graph builder (graph._GraphBuilder)."""

    def weight(self, name: str, array: npt.NDArray[np.generic]) -> str: ...

    def node(self, op: str, inputs: list[str], name: str, **attrs: Any) -> list[str]: ...


def nbits_linear(b: Builder, x: str, m: BlockMatrix, name: str, accuracy_level: int) -> str:
    """x @ w.T for w = `m` ([N, K]); x is [batch, seq, K]."""
    n, k = m.shape
    codes = b.weight(f"{name}.qweight", m.packed())
    scales = b.weight(f"{name}.scales", np.ascontiguousarray(m.scales.reshape(-1)))
    (y,) = b.node(
        "MatMulNBits",
        [x, codes, scales],
        f"/{name}/MatMulNBits",
        K=k,
        N=n,
        bits=m.bits,
        block_size=m.block,
        accuracy_level=accuracy_level,
    )
    if m.offsets is None:
        return y
    shape = b.weight(f"{name}.blocks_shape", np.array([0, 0, k // m.block, m.block], np.int64))
    (blocks,) = b.node("Reshape", [x, shape], f"/{name}/blocksum/Reshape")
    axes = b.weight(f"{name}.blocks_axis", np.array([-1], np.int64))
    (sums,) = b.node("ReduceSum", [blocks, axes], f"/{name}/blocksum/ReduceSum", keepdims=0)
    offsets = b.weight(f"{name}.offsets", np.ascontiguousarray(m.offsets.T))
    (term,) = b.node("MatMul", [sums, offsets], f"/{name}/offset/MatMul")
    (out,) = b.node("Add", [y, term], f"/{name}/offset/Add")
    return out
