"""graph_stats: the weight bytes a decode step streams, counted from the graph alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from assistant.convert.optimize import graph_stats  # noqa: E402


def test_streamed_bytes_count_matmul_weights_once_and_skip_gathers(tmp_path: Path) -> None:
    k, n, vocab = 64, 32, 100
    inits = [
        numpy_helper.from_array(np.zeros((n, k // 32, 16), np.uint8), "codes"),  # 1024 B
        numpy_helper.from_array(np.zeros(n * k // 32, np.float32), "scales"),  # 256 B
        numpy_helper.from_array(np.zeros((k // 32, n), np.float32), "offsets"),  # 256 B
        numpy_helper.from_array(np.zeros((vocab, k), np.float32), "embed"),  # gathered only
        numpy_helper.from_array(np.zeros((k, vocab), np.float32), "head"),  # 25600 B
    ]
    nodes = [
        helper.make_node("Gather", ["embed", "ids"], ["x"]),
        helper.make_node(
            "MatMulNBits",
            ["x", "codes", "scales"],
            ["y"],
            domain="com.microsoft",
            K=k,
            N=n,
            bits=4,
            block_size=32,
        ),
        helper.make_node("MatMul", ["sums", "offsets"], ["t"]),
        helper.make_node("MatMul", ["x", "head"], ["logits"]),
        helper.make_node("MatMul", ["x", "head"], ["logits2"]),  # shared: read once
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info("ids", TensorProto.INT64, [1]),
            helper.make_tensor_value_info("sums", TensorProto.FLOAT, [1, k // 32]),
        ],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in ("y", "t")],
        inits,
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph), path)
    stats = graph_stats(path)
    assert stats.weight_bytes_per_token == 1024 + 256 + 256 + 25600
    assert stats.flops_per_token == 2 * k * n + 2 * (k // 32) * n + 2 * 2 * k * vocab
