"""Precision gguf's reference without float32 weights: the GGUF's blocks at level 0 are the
dequantized model (logits and calibration statistics), and the matrices it maps from their
blocks are never dequantized."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from assistant.convert import smooth
from assistant.convert.exact import exact_sources, read_blocks
from assistant.convert.gguf_loader import load_gguf
from assistant.convert.graph import build_decoder
from assistant.convert.graph_io import ExternalData
from assistant.convert.prepare_gguf import build_reference
from assistant.convert.quality import perplexity, predictions
from assistant.convert.smooth import collect_stats
from assistant.model.feeds import prefill_logits
from assistant.model.session import open_session
from tests.test_model_tiny_gguf import TinySpec, write_tiny_gguf

PROMPT = [5, 80, 120, 260, 7, 33, 150, 298, 42, 9]
SPECS = {
    "llama-Q4_1": TinySpec(matrix_type="Q4_1"),
    "llama-Q8_0": TinySpec(matrix_type="Q8_0"),
    "qwen2-untied-Q4_1": TinySpec(arch="qwen2", tied=False, matrix_type="Q4_1"),
}


def _save(proto: onnx.ModelProto, path: Path) -> Path:
    onnx.save_model(
        proto, path, save_as_external_data=True, location=path.name + ".data", size_threshold=1024
    )
    return path


@pytest.mark.parametrize("name", list(SPECS))
def test_level0_reference_is_the_dequantized_model(name: str, tmp_path: Path) -> None:
    source = tmp_path / "tiny.gguf"
    write_tiny_gguf(source, SPECS[name])
    full = load_gguf(source)
    fp32 = _save(build_decoder(full.config, full.weights), tmp_path / "fp32.onnx")
    lean = load_gguf(source, exact_sources(source))
    reference = _save(build_reference(lean, read_blocks(source)[0]), tmp_path / "ref.onnx")
    # The reference holds no fp32 copy of a mapped matrix: MatMulNBits for every projection.
    # (MatMul remains only in the side terms: block sums times offsets.)
    nodes = onnx.load(reference, load_external_data=False).graph.node
    assert [n.name for n in nodes if n.op_type == "MatMul" and "/side/" not in n.name] == []
    expected = prefill_logits(open_session(fp32, threads=1), PROMPT)
    got = prefill_logits(open_session(reference, threads=1), PROMPT)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    # Calibration statistics (outlier channels) read the fused exact graph the same way.
    for want, have in zip(
        collect_stats(fp32, PROMPT, full.config),
        collect_stats(reference, PROMPT, lean.config),
        strict=True,
    ):
        for a, b in zip(vars(want).values(), vars(have).values(), strict=True):
            np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
            # Own memory: an array viewing an ORT output kept the whole session alive
            # (2.7 GB at 1.5B) for as long as prepare held the statistics.
            assert b.base is None


def test_mapped_matrices_are_not_dequantized(tmp_path: Path) -> None:
    source = tmp_path / "tiny.gguf"
    spec = TinySpec(arch="qwen2", tied=False, matrix_type="Q4_1")
    write_tiny_gguf(source, spec)
    skip = exact_sources(source)
    parts = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
    expected = {f"blk.{i}.{p}.weight" for i in range(spec.n_layers) for p in parts}
    # The untied head maps exactly too; the embedding is read as fp32 (its Gather).
    assert skip == expected | {"output.weight"}
    model = load_gguf(source, skip)
    full = load_gguf(source)
    layer, full_layer = model.weights.layers[0], full.weights.layers[0]
    assert layer.wq.shape == full_layer.wq.shape and layer.wq.strides == (0, 0)
    assert np.isnan(layer.w_down).all()
    np.testing.assert_array_equal(layer.attn_norm, full_layer.attn_norm)
    np.testing.assert_array_equal(model.weights.token_embd, full.weights.token_embd)
    assert model.weights.parameter_count() == full.weights.parameter_count()


def test_weights_streamed_to_the_data_file_make_the_same_model(tmp_path: Path) -> None:
    source = tmp_path / "tiny.gguf"
    write_tiny_gguf(source, TinySpec(matrix_type="Q4_1"))
    model, blocks = load_gguf(source), read_blocks(source)[0]
    inline = _save(build_reference(model, blocks), tmp_path / "inline.onnx")
    streamed = tmp_path / "streamed" / "model.onnx"
    sink = ExternalData(streamed, keep=["cos_cache"])
    proto = build_reference(model, blocks, sink)
    # Only small tensors and the kept one are in the proto itself.
    inline_sizes = {t.name: len(t.raw_data) for t in proto.graph.initializer if t.raw_data}
    assert max(v for k, v in inline_sizes.items() if k != "cos_cache") < 1024
    assert inline_sizes["cos_cache"] >= 1024
    sink.save(proto)
    saved = onnx.load(streamed, load_external_data=False).graph.initializer
    offsets = [int(e.value) for t in saved for e in t.external_data if e.key == "offset"]
    assert offsets and all(o % 4096 == 0 for o in offsets)
    np.testing.assert_array_equal(
        prefill_logits(open_session(streamed, threads=1), PROMPT),
        prefill_logits(open_session(inline, threads=1), PROMPT),
    )


def test_predictions_in_chunks_match_one_window(tmp_path: Path) -> None:
    source = tmp_path / "tiny.gguf"
    write_tiny_gguf(source, TinySpec())
    model = load_gguf(source)
    session = open_session(
        _save(build_decoder(model.config, model.weights), tmp_path / "m.onnx"), 1
    )
    logits = prefill_logits(session, PROMPT)
    whole = predictions(session, PROMPT, chunk=len(PROMPT))
    assert whole.ppl == pytest.approx(perplexity(logits, PROMPT), rel=1e-6)
    np.testing.assert_array_equal(whole.top1, logits[:-1].argmax(axis=-1))
    # 3 + 3 + 3 + 1 tokens, the cache carried between calls: the same predictions.
    chunked = predictions(session, PROMPT, chunk=3)
    assert chunked.ppl == pytest.approx(whole.ppl, rel=1e-4)
    np.testing.assert_array_equal(chunked.top1, whole.top1)


def test_calibration_in_chunks_matches_one_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "tiny.gguf"
    write_tiny_gguf(source, TinySpec())
    model = load_gguf(source)
    path = _save(build_decoder(model.config, model.weights), tmp_path / "m.onnx")
    whole = collect_stats(path, PROMPT, model.config)
    monkeypatch.setattr(smooth, "CHUNK", 3)  # 3 + 3 + 3 + 1 tokens, the cache carried
    chunked = collect_stats(path, PROMPT, model.config)
    for want, have in zip(whole, chunked, strict=True):
        for a, b in zip(vars(want).values(), vars(have).values(), strict=True):
            np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
