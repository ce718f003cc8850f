"""Every GGUF block type through its exact ONNX encoding: ONNX Runtime's MatMulNBits (plus
the block-sum offset term) reproduces llama.cpp's dequantized weights, as gguf-py computes
them, exactly at accuracy level 0 and within the int8 rounding of x at level 4.

Test blocks: gguf-py quantizes the legacy types (Q4_0 ... Q8_0) from random floats. It has
no quantizer for the K-types, and llama.cpp's is not installed in the test environment, so
Q4_K/Q5_K/Q6_K blocks are random bytes with finite fp16 scales: every such byte string is
a valid block, and gguf-py's own dequantizer is the reference either way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gguf
import numpy as np
import numpy.typing as npt
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from assistant.convert.ggml_blocks import BLOCK_BYTES, BlockMatrix, concat_rows, decode_blocks
from assistant.convert.nbits import Shifts, nbits_linear
from assistant.model.errors import UnsupportedModelError
from assistant.model.session import open_session

ROWS, COLS = 24, 512  # K = 2 super-blocks of 256
TYPES = sorted(BLOCK_BYTES)
K_TYPES = {"Q4_K", "Q5_K", "Q6_K"}
# Byte offsets of each type's fp16 fields (d, and dmin or m where present).
F16_FIELDS = {"Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,)}


def raw_blocks(type_name: str, rows: int = ROWS, cols: int = COLS, seed: int = 0) -> Any:
    rng = np.random.default_rng(seed)
    qtype = gguf.GGMLQuantizationType[type_name]
    if type_name not in K_TYPES:
        weights = rng.standard_normal((rows, cols)).astype(np.float32) * 0.1
        # A per-row shift gives the types with a minimum (Q4_1, Q5_1) a real offset.
        weights += rng.uniform(-0.05, 0.05, (rows, 1)).astype(np.float32)
        return gguf.quants.quantize(weights, qtype)
    size, per_block = BLOCK_BYTES[type_name]
    raw = rng.integers(0, 256, (rows * cols // per_block, size), dtype=np.uint8)
    for start in F16_FIELDS[type_name]:
        scale = rng.uniform(0.002, 0.02, len(raw)).astype(np.float16)
        raw[:, start : start + 2] = scale.view(np.uint8).reshape(-1, 2)
    return raw.reshape(rows, -1)


def reference(type_name: str, raw: Any) -> npt.NDArray[np.float32]:
    qtype = gguf.GGMLQuantizationType[type_name]
    return gguf.quants.dequantize(raw, qtype).reshape(ROWS, COLS).astype(np.float32)


class _Builder:
    """The two methods nbits needs, collecting one small graph."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[TensorProto] = []

    def weight(self, name: str, array: npt.NDArray[np.generic]) -> str:
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def node(
        self, op: str, inputs: list[str], name: str, n_out: int = 1, **attrs: Any
    ) -> list[str]:
        domain = "com.microsoft" if op == "MatMulNBits" else ""
        outs = [f"{name}/out{k}" for k in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=name, domain=domain, **attrs))
        return outs


def run_linear(
    tmp: Path,
    matrix: BlockMatrix,
    x: npt.NDArray[np.float32],
    level: int,
    shifts: Shifts | None = None,
) -> Any:
    b = _Builder()
    y = nbits_linear(b, "x", matrix, "proj", level, shifts)
    rows, cols = matrix.shape
    graph = helper.make_graph(
        [*b.nodes, helper.make_node("Identity", [y], ["y"])],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, None, cols])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, None, rows])],
        b.initializers,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]
    )
    model.ir_version = 10
    path = tmp / f"linear-{level}.onnx"
    onnx.save_model(model, path)
    return open_session(path, threads=1).run(["y"], {"x": x[None]})[0][0]


def activations(m: int) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((m, COLS)).astype(np.float32)
    x[:, ::37] *= 8  # a few outlier channels, as real activations have
    return x


@pytest.mark.parametrize("type_name", TYPES)
def test_decoded_blocks_are_the_dequantized_weights(type_name: str) -> None:
    raw = raw_blocks(type_name)
    matrix = decode_blocks(type_name, raw, ROWS, COLS)
    assert matrix.codes.max() < (1 << matrix.bits)
    np.testing.assert_allclose(matrix.dequantize(), reference(type_name, raw), rtol=1e-6, atol=0)


@pytest.mark.parametrize("type_name", TYPES)
def test_level_0_reproduces_the_gguf_weights(type_name: str, tmp_path: Path) -> None:
    raw = raw_blocks(type_name)
    matrix = decode_blocks(type_name, raw, ROWS, COLS)
    x = activations(3)
    expected = x.astype(np.float64) @ reference(type_name, raw).T.astype(np.float64)
    got = run_linear(tmp_path, matrix, x, level=0)
    # fp32 accumulation over K = 512 terms: rounding only.
    scale = np.abs(x).astype(np.float64) @ np.abs(reference(type_name, raw)).T
    assert np.all(np.abs(got - expected) <= 1e-5 * scale)


@pytest.mark.parametrize("type_name", TYPES)
def test_level_4_is_within_int8_rounding_of_x(type_name: str, tmp_path: Path) -> None:
    raw = raw_blocks(type_name)
    matrix = decode_blocks(type_name, raw, ROWS, COLS)
    w = reference(type_name, raw).astype(np.float64)
    x = activations(3)
    expected = x.astype(np.float64) @ w.T
    got = run_linear(tmp_path, matrix, x, level=4)
    # x is rounded to int8 per block of the weight's block size: each element moves by at
    # most half a step, amax(block) / 127 / 2.
    blocks = x.reshape(len(x), -1, matrix.block)
    step = np.repeat(np.abs(blocks).max(axis=-1) / 127.0, matrix.block, axis=1)
    bound = (step / 2) @ np.abs(w).T
    error = np.abs(got - expected)
    assert np.all(error <= bound * 1.01 + 1e-4)
    # ... and the offset term is there: without it the error would be the whole term.
    assert error.max() < 0.05 * np.abs(expected).max()


OUTLIERS = Shifts(np.arange(0, COLS, 37, dtype=np.int64), np.full(len(range(0, COLS, 37)), 3))


@pytest.mark.parametrize("type_name", ["Q4_1", "Q8_0", "Q4_K", "Q6_K"])
def test_shifted_channels_keep_the_function_at_level_0(type_name: str, tmp_path: Path) -> None:
    raw = raw_blocks(type_name)
    matrix = decode_blocks(type_name, raw, ROWS, COLS)
    x = activations(3)
    shifted = x.copy()
    shifted[:, OUTLIERS.channels] /= OUTLIERS.divisors()  # what the upstream gamma does
    w = reference(type_name, raw).astype(np.float64)
    got = run_linear(tmp_path, matrix, shifted, level=0, shifts=OUTLIERS)
    scale = np.abs(x).astype(np.float64) @ np.abs(w).T
    assert np.all(np.abs(got - x.astype(np.float64) @ w.T) <= 1e-5 * scale)


@pytest.mark.parametrize("type_name", ["Q4_1", "Q4_K"])
def test_shifted_channels_round_their_blocks_finer_at_level_4(
    type_name: str, tmp_path: Path
) -> None:
    raw = raw_blocks(type_name)
    matrix = decode_blocks(type_name, raw, ROWS, COLS)
    x = activations(3)
    shifted = x.copy()
    shifted[:, OUTLIERS.channels] /= OUTLIERS.divisors()
    w = reference(type_name, raw).astype(np.float64)
    expected = x.astype(np.float64) @ w.T
    got = run_linear(tmp_path, matrix, shifted, level=4, shifts=OUTLIERS)
    # x' is rounded per block with its own steps; a shifted channel's rounding error is
    # scaled back up by 2**p with its weight.
    blocks = shifted.reshape(len(x), -1, matrix.block)
    step = np.repeat(np.abs(blocks).max(axis=-1) / 127.0, matrix.block, axis=1)
    w_eff = np.abs(w).copy()
    w_eff[:, OUTLIERS.channels] *= OUTLIERS.divisors()
    error = np.abs(got - expected)
    assert np.all(error <= (step / 2) @ w_eff.T * 1.01 + 1e-4)
    unshifted = np.abs(run_linear(tmp_path, matrix, x, level=4) - expected)
    assert np.sqrt((error**2).mean()) < np.sqrt((unshifted**2).mean())


def test_fused_parts_of_different_types_stay_exact() -> None:
    parts = [
        decode_blocks(t, raw_blocks(t, seed=i), ROWS, COLS)
        for i, t in enumerate(("Q4_K", "Q4_K", "Q6_K"))
    ]
    fused = concat_rows(parts)
    assert (fused.bits, fused.block) == (8, 16)  # the widest of 4-bit/32 and 8-bit/16
    expected = np.concatenate([p.dequantize() for p in parts])
    np.testing.assert_array_equal(fused.dequantize(), expected)


def test_nibbles_are_repacked_pairwise() -> None:
    codes = np.arange(32, dtype=np.uint8).reshape(1, 32) % 16
    matrix = BlockMatrix(4, 32, codes, np.ones((1, 1), np.float32), None)
    packed = matrix.packed().reshape(-1)
    # MatMulNBits: byte j = element 2j | element 2j+1 << 4.
    assert list(packed[:2]) == [0 | 1 << 4, 2 | 3 << 4]


def test_unsupported_type_is_named() -> None:
    with pytest.raises(UnsupportedModelError, match="IQ4_XS"):
        decode_blocks("IQ4_XS", np.zeros(136, np.uint8), 1, 256)


def test_wrong_byte_count_is_corrupt() -> None:
    with pytest.raises(Exception, match="bytes"):
        decode_blocks("Q4_0", np.zeros(17, np.uint8), 1, 32)
