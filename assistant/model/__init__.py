"""The model service layer: GGUF -> ONNX model folders, and loading them for inference."""

from assistant.model.errors import (
    CorruptModelError,
    ModelError,
    ModelNotFoundError,
    UnsupportedModelError,
)
from assistant.model.manager import CatalogEntry, ModelInstance, ModelManager
from assistant.model.paths import default_models_dir
from assistant.model.prepare import prepare_model

__all__ = [
    "CatalogEntry",
    "CorruptModelError",
    "ModelError",
    "ModelInstance",
    "ModelManager",
    "ModelNotFoundError",
    "UnsupportedModelError",
    "default_models_dir",
    "prepare_model",
]
