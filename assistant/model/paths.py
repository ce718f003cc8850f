"""Where prepared models and downloaded sources live on disk."""

from __future__ import annotations

import os
from pathlib import Path

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
