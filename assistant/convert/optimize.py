"""ONNX Runtime's offline graph optimization, and the graph figures recorded in the manifest."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

# Basic and extended optimizations rewrite the graph with portable ops only; "all" may
# bake in layouts for the CPU that ran it, so a model folder copied elsewhere could break.
OPTIMIZATION_LEVEL = "extended"
_FLOAT_MATMULS = {"MatMul", "FusedMatMul", "Gemm"}


@dataclass(frozen=True)
class GraphStats:
    """Node count and the FLOPs one token costs in the weight matmuls."""

    nodes: int
    op_counts: dict[str, int]
    # 2*K*N per weight matmul; attention over the cache (4*layers*heads*head_dim per cached
    # token) and elementwise ops are left out: they are small next to the matmuls.
    flops_per_token: int
    # Bytes of weights one decode step reads: every matmul's weight initializers (codes,
    # scales, offsets), once each; gathers read one row a token and count nothing. The plan's
    # speed estimate divides bandwidth by it (plan_speed.py).
    weight_bytes_per_token: int = 0


def _nbytes(init: onnx.TensorProto) -> int:
    itemsize = onnx.helper.tensor_dtype_to_np_dtype(init.data_type).itemsize
    return int(np.prod(init.dims, dtype=np.int64)) * itemsize


def graph_stats(path: Path) -> GraphStats:
    """Read the graph (not its weights) and count nodes, weight-matmul FLOPs and the
    weight bytes a decode step streams."""
    model = onnx.load(path, load_external_data=False)
    inits = {init.name: init for init in model.graph.initializer}
    flops = 0
    streamed: set[str] = set()
    for node in model.graph.node:
        if node.op_type == "MatMulNBits":
            attrs = {a.name: a.i for a in node.attribute}
            flops += 2 * attrs["K"] * attrs["N"]
            streamed.update(name for name in node.input[1:] if name in inits)
        elif node.op_type in _FLOAT_MATMULS and node.input[1] in inits:
            dims = inits[node.input[1]].dims
            flops += 2 * dims[-2] * dims[-1]
            streamed.add(node.input[1])
    counts = Counter(node.op_type for node in model.graph.node)
    return GraphStats(
        nodes=len(model.graph.node),
        op_counts=dict(sorted(counts.items())),
        flops_per_token=flops,
        weight_bytes_per_token=sum(_nbytes(inits[name]) for name in streamed),
    )


def optimize_offline(source: Path, target: Path, threads: int = 1) -> None:
    """Save ORT's optimized graph for `source` as `target` (+ `target`.data)."""
    import onnxruntime as ort  # noqa: PLC0415

    options = ort.SessionOptions()
    options.log_severity_level = 3  # see session.open_session
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(target)
    options.intra_op_num_threads = threads
    options.add_session_config_entry(
        "session.optimized_model_external_initializers_file_name", target.name + ".data"
    )
    options.add_session_config_entry(
        "session.optimized_model_external_initializers_min_size_in_bytes", "1024"
    )
    # Building the session is what writes the optimized file; the session itself is dropped.
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
