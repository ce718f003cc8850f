"""The ONNX decoder against the NumPy reference: prefill, cached decode, right-padded batches."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from assistant.convert.exact import GROUPS, read_blocks
from assistant.convert.gguf_loader import load_gguf
from assistant.convert.graph import build_decoder
from assistant.convert.optimize import optimize_offline
from assistant.convert.prepare_gguf import build_gguf_graph
from assistant.convert.quantize import quantize_int8
from assistant.convert.smooth import collect_stats, smooth
from assistant.model.feeds import empty_past, every_position
from assistant.model.session import open_session
from tests.test_model_tiny_gguf import TinySpec, TinyWeights, reference_logits, write_tiny_gguf

PROMPT = [5, 80, 120, 260, 7, 33, 150, 299 - 1, 42, 9]
CONTINUATION = [17, 201, 64, 3]

Built = tuple[Any, TinyWeights, Path]


def _build(tmp: Path, spec: TinySpec, precision: str) -> Built:
    weights = write_tiny_gguf(tmp / "tiny.gguf", spec)
    model = load_gguf(tmp / "tiny.gguf")
    if precision.startswith("gguf"):
        # "gguf-0": every group at level 0 (exact); "gguf-4": int8 activations.
        level = int(precision.split("-")[1])
        blocks, _ = read_blocks(tmp / "tiny.gguf")
        proto = build_gguf_graph(model, blocks, dict.fromkeys(GROUPS, level))
    else:
        proto = build_decoder(model.config, model.weights)
    if precision == "int8":
        proto = quantize_int8(proto)
    onnx.save_model(
        proto,
        tmp / "raw.onnx",
        save_as_external_data=True,
        location="raw.onnx.data",
        size_threshold=1024,
    )
    optimize_offline(tmp / "raw.onnx", tmp / "model.onnx")
    return open_session(tmp / "model.onnx", threads=1), weights, tmp / "model.onnx"


@pytest.fixture(scope="module", params=["llama", "qwen2-untied"])
def fp32(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Built:
    spec = TinySpec() if request.param == "llama" else TinySpec(arch="qwen2", tied=False)
    return _build(tmp_path_factory.mktemp("fp32"), spec, "fp32")


@pytest.fixture(
    scope="module",
    params=[("llama", "Q4_1"), ("qwen2-untied", "Q4_0"), ("llama", "Q5_1"), ("llama", "Q5_0")],
    ids="-".join,
)
def gguf_exact(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Built:
    arch, type_name = request.param
    spec = TinySpec(matrix_type=type_name)
    if arch == "qwen2-untied":
        spec = TinySpec(arch="qwen2", tied=False, matrix_type=type_name)
    return _build(tmp_path_factory.mktemp("gguf"), spec, "gguf-0")


@pytest.fixture(scope="module")
def int8(tmp_path_factory: pytest.TempPathFactory) -> Built:
    return _build(tmp_path_factory.mktemp("int8"), TinySpec(), "int8")


def _run(
    session: Any, ids: list[list[int]], mask: np.ndarray, past: dict[str, np.ndarray]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    names = [o.name for o in session.get_outputs()]
    feeds = {
        "input_ids": np.asarray(ids, dtype=np.int64),
        "attention_mask": mask,
        **every_position(session),
        **past,
    }
    outs = dict(zip(names, session.run(None, feeds), strict=True))
    new_past = {
        k.replace("present.", "past_key_values."): v
        for k, v in outs.items()
        if k.startswith("present.")
    }
    return outs["logits"], new_past


def _generate_logits(session: Any, prompt: list[int], continuation: list[int]) -> np.ndarray:
    """Logits for prompt + continuation: one prefill, then one decode step per token."""
    logits, past = _run(
        session, [prompt], np.ones((1, len(prompt)), np.int64), empty_past(session, 1)
    )
    rows = list(logits[0])
    for step, token in enumerate(continuation):
        mask = np.ones((1, len(prompt) + step + 1), np.int64)
        logits, past = _run(session, [[token]], mask, past)
        rows.append(logits[0, -1])
    return np.stack(rows)


def _rel_err(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


def test_fp32_prefill_and_decode_match_reference(fp32: Built) -> None:
    session, weights, _ = fp32
    expected = reference_logits(weights, PROMPT + CONTINUATION)
    actual = _generate_logits(session, PROMPT, CONTINUATION)
    assert expected.std() > 1.0  # the logits are not degenerate
    assert _rel_err(actual, expected) < 1e-4


def test_gguf_level_0_matches_reference(gguf_exact: Built) -> None:
    """The source's own blocks, exactly: as close to the dequantized weights as FP32 is."""
    session, weights, _ = gguf_exact
    expected = reference_logits(weights, PROMPT + CONTINUATION)
    actual = _generate_logits(session, PROMPT, CONTINUATION)
    assert _rel_err(actual, expected) < 1e-4


def test_gguf_graph_is_exact_blocks_with_offsets(gguf_exact: Built) -> None:
    _, weights, path = gguf_exact
    ops = Counter(n.op_type for n in onnx.load(path, load_external_data=False).graph.node)
    assert ops["MatMulNBits"] >= 4 * weights.spec.n_layers  # qkv, o, gate_up, down per layer
    assert ops["GatherBlockQuantized"] == 1
    # Q4_1 and Q5_1 carry a minimum: every matmul has a side term (its block sums come out
    # as extra MatMulNBits rows, split off and mapped back by one small MatMul); Q4_0/Q5_0
    # have one only where an outlier input channel is shifted.
    with_min = weights.spec.matrix_type in {"Q4_1", "Q5_1"}
    assert (ops["Split"] >= 4 * weights.spec.n_layers) == with_min, ops


def test_gguf_level_4_stays_close_to_reference(tmp_path: Path) -> None:
    session, weights, _ = _build(tmp_path, TinySpec(matrix_type="Q4_1"), "gguf-4")
    expected = reference_logits(weights, PROMPT + CONTINUATION)
    actual = _generate_logits(session, PROMPT, CONTINUATION)
    assert 1e-6 < _rel_err(actual, expected) < 0.05  # int8 rounding of x, nothing more


def test_int8_stays_close_to_reference(int8: Built) -> None:
    session, weights, _ = int8
    expected = reference_logits(weights, PROMPT + CONTINUATION)
    actual = _generate_logits(session, PROMPT, CONTINUATION)
    # acc. level 4 quantizes activations per block too; measured 0.027 on this model.
    assert _rel_err(actual, expected) < 6e-2
    agree = (actual.argmax(-1) == expected.argmax(-1)).mean()
    assert agree >= 0.9


def test_int8_graph_uses_8bit_ops(int8: Built) -> None:
    ops = {n.op_type for n in onnx.load(int8[2], load_external_data=False).graph.node}
    assert {"MatMulNBits", "GatherBlockQuantized", "GroupQueryAttention"} <= ops
    assert "MatMul" not in ops


def test_right_padded_batch_matches_rows_alone_fp32(fp32: Built) -> None:
    _check_batch(fp32[0])


def test_right_padded_batch_matches_rows_alone_int8(int8: Built) -> None:
    _check_batch(int8[0])


def _check_batch(session: Any) -> None:
    """Two rows of different lengths, right-padded, give each row's output when run alone."""
    long, short = PROMPT, PROMPT[:4]
    width = len(long)
    mask = np.zeros((2, width), np.int64)
    mask[0, :] = 1
    mask[1, : len(short)] = 1
    padded = [long, short + [0] * (width - len(short))]
    logits, past = _run(session, padded, mask, empty_past(session, 2))
    alone_long = _generate_logits(session, long, CONTINUATION[:3])
    alone_short = _generate_logits(session, short, CONTINUATION[:3])
    np.testing.assert_allclose(logits[0, width - 1], alone_long[width - 1], atol=1e-5)
    np.testing.assert_allclose(logits[1, len(short) - 1], alone_short[len(short) - 1], atol=1e-5)
    lengths = [len(long), len(short)]
    for step, token in enumerate(CONTINUATION[:3]):
        # Each row's mask has (its length + 1) ones; GQA writes its token at that index.
        mask = np.zeros((2, width + step + 1), np.int64)
        for row, n in enumerate(lengths):
            mask[row, : n + 1] = 1
        logits, past = _run(session, [[token], [token]], mask, past)
        lengths = [n + 1 for n in lengths]
        np.testing.assert_allclose(logits[0, 0], alone_long[len(long) + step], atol=1e-5)
        np.testing.assert_allclose(logits[1, 0], alone_short[len(short) + step], atol=1e-5)


def test_smoothing_keeps_the_fp32_function(tmp_path: Path) -> None:
    """Channel scales folded into norms / up / v projections change no FP32 output."""
    spec = TinySpec(arch="qwen2")  # with biases: v's bias must be rescaled too
    weights = write_tiny_gguf(tmp_path / "tiny.gguf", spec)
    model = load_gguf(tmp_path / "tiny.gguf")
    plain = build_decoder(model.config, model.weights)
    onnx.save_model(
        plain,
        tmp_path / "plain.onnx",
        save_as_external_data=True,
        location="plain.onnx.data",
        size_threshold=1024,
    )
    stats = collect_stats(tmp_path / "plain.onnx", PROMPT, model.config)
    assert stats[0].down_in.shape == (spec.ffn,) and float(stats[0].attn_in.max()) > 0
    smoothed = smooth(model.config, model.weights, stats)
    assert not np.allclose(smoothed.layers[0].w_down, model.weights.layers[0].w_down)
    onnx.save_model(
        build_decoder(model.config, smoothed),
        tmp_path / "smooth.onnx",
        save_as_external_data=True,
        location="smooth.onnx.data",
        size_threshold=1024,
    )
    session = open_session(tmp_path / "smooth.onnx", threads=1)
    expected = reference_logits(weights, PROMPT + CONTINUATION)
    assert _rel_err(_generate_logits(session, PROMPT, CONTINUATION), expected) < 1e-4
    assert not (tmp_path / "calibration.onnx").exists()
