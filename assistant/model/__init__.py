"""The runtime model layer: find and load prepared ONNX model folders (building them from a
GGUF is assistant.convert, an optional extra)."""

from assistant.model.errors import (
    CorruptModelError,
    ModelError,
    ModelNotFoundError,
    UnsupportedModelError,
)
from assistant.model.manager import CatalogEntry, ModelInstance, ModelManager
from assistant.model.paths import default_models_dir

__all__ = [
    "CatalogEntry",
    "CorruptModelError",
    "ModelError",
    "ModelInstance",
    "ModelManager",
    "ModelNotFoundError",
    "UnsupportedModelError",
    "default_models_dir",
]
