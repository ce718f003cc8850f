"""The one way this project opens an ONNX Runtime session on a model file."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def open_session(model_file: Path, threads: int | None) -> Any:
    """CPU session with explicit provider and thread count (`None`: ORT picks, one per core)."""
    import onnxruntime as ort  # noqa: PLC0415 - keeps `import assistant.model` light

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or 0
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # The file already holds the portable (extended) optimizations; "all" adds the
    # layouts specific to this CPU, which is right at load time and never saved.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Errors only: ORT warns on every load that `logits_to_keep`, an overridable input
    # with a default, is not constant-folded, which is the point of it.
    options.log_severity_level = 3
    return ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
