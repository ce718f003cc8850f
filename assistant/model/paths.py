"""Where prepared models and downloaded sources live on disk."""

from __future__ import annotations

import os
from pathlib import Path

from assistant.model.errors import ModelNotFoundError
from assistant.model.manifest import MANIFEST_NAME

MODELS_ENV = "EDGE_ASSISTANT_MODELS"
CACHE_ENV = "EDGE_ASSISTANT_CACHE"


def default_models_dir() -> Path:
    """`$EDGE_ASSISTANT_MODELS` if set, else `~/.cache/edge-assistant/models`."""
    value = os.environ.get(MODELS_ENV)
    if value:
        return Path(value).expanduser()
    return Path.home() / ".cache" / "edge-assistant" / "models"


def default_download_dir() -> Path:
    """`$EDGE_ASSISTANT_CACHE` if set, else `~/.cache/edge-assistant/downloads`."""
    value = os.environ.get(CACHE_ENV)
    if value:
        return Path(value).expanduser()
    return Path.home() / ".cache" / "edge-assistant" / "downloads"


def resolve_model_dir(models_dir: Path, path: Path | str) -> Path:
    """A prepared model folder from a path, or from a model id inside `models_dir`.
    Light on purpose (no tokenizers, no onnxruntime): the service resolves its folder
    with it and leaves loading to the worker."""
    for candidate in (Path(path), models_dir / str(path)):
        if (candidate / MANIFEST_NAME).is_file():
            return candidate
    raise ModelNotFoundError(f"no prepared model {str(path)!r} (looked in {models_dir})")
