"""The one way this project opens an ONNX Runtime session on a model file."""

from __future__ import annotations

import contextlib
import mmap
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def open_session(
    model_file: Path, threads: int | None, external_in_memory: Sequence[str] = ()
) -> Any:
    """CPU session with explicit provider and thread count (`None`: ORT picks, one per core).

    `external_in_memory` names external-data files (next to `model_file`) that Python maps
    and hands to ONNX Runtime as memory, the model itself given as bytes. The sandboxed
    worker needs it where a directory above the model folder is closed to its uid: ORT
    canonicalizes the folder's path to validate external-data locations, which needs
    every directory above it to be searchable. It costs memory: ORT copies those tensors
    instead of mapping the file (~80 MB more for the default model).
    """
    import onnxruntime as ort  # noqa: PLC0415 - keeps `import assistant.model` light

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or 0
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # No CPU arena: it keeps the largest run's activations for good (-21 MB peak on the
    # exact-GGUF 135M graph with chunked prefill; prefill and decode speed within noise).
    options.enable_cpu_mem_arena = False
    # The file already holds the portable (extended) optimizations; "all" adds the
    # layouts specific to this CPU, which is right at load time and never saved.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Errors only: ORT warns on every load that `logits_to_keep`, an overridable input
    # with a default, is not constant-folded, which is the point of it.
    options.log_severity_level = 3
    providers = ["CPUExecutionProvider"]
    if not external_in_memory:
        return ort.InferenceSession(str(model_file), options, providers=providers)
    with contextlib.ExitStack() as maps:
        views = [maps.enter_context(_mapped(model_file.parent / n)) for n in external_in_memory]
        options.add_external_initializers_from_files_in_memory(
            list(external_in_memory), views, [len(v) for v in views]
        )
        session = ort.InferenceSession(model_file.read_bytes(), options, providers=providers)
        del options  # it holds the views; the maps close on the way out
    return session


@contextlib.contextmanager
def _mapped(path: Path) -> Any:
    with path.open("rb") as file, mmap.mmap(file.fileno(), 0, prot=mmap.PROT_READ) as data:
        view = memoryview(data)
        try:
            yield view
        finally:
            view.release()
