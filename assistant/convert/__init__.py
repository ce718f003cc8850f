"""Model preparation: GGUF -> ONNX model folder (read, build, quantize, optimize, verify).

Needs the optional `prepare` extra (gguf, onnx, onnx-ir). The service and the worker never
import this package: they only load prepared folders through `assistant.model`.
"""

from assistant.convert.prepare import prepare_model
from assistant.model.manifest import Precision

__all__ = ["Precision", "prepare_model"]
