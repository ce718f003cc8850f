"""Which ONNX Runtime execution providers are installed, without importing onnxruntime.

The service process only reports providers (doctor, info); importing onnxruntime there
would load numpy and ORT's 25 MB library into a process that never runs a model. The
wheel ships one shared library per optional provider next to its Python binding, and the
CPU provider is built in, so the file names tell what is installed. (ORT's own
`get_available_providers()` lists the same names; whether a GPU driver is present is only
known when a session starts, in the worker.)
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

_LIBRARY_PREFIX = "libonnxruntime_providers_"
_NAMES = {
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "migraphx": "MIGraphXExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "dnnl": "DnnlExecutionProvider",
    "qnn": "QNNExecutionProvider",
    "vitisai": "VitisAIExecutionProvider",
}


def installed_providers() -> tuple[str, ...]:
    """The installed providers, best first as ORT orders them, CPU last; () without ORT."""
    spec = importlib.util.find_spec("onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        return ()
    capi = Path(next(iter(spec.submodule_search_locations))) / "capi"
    found = {
        lib.name.removeprefix(_LIBRARY_PREFIX).split(".", 1)[0]
        for lib in capi.glob(f"{_LIBRARY_PREFIX}*.so*")
    }
    return (*(name for key, name in _NAMES.items() if key in found), "CPUExecutionProvider")
