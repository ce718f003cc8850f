"""The model as the HTTP APIs name and describe it.

Ollama names are `name:tag`. The model is listed under its own id and under a stable
alias, `edge-assistant:latest`, that always means "whatever the hardware plan picked":
a Home Assistant entry set up with the alias keeps working when the plan changes model.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from assistant.plan import Plan

ALIAS = "edge-assistant"
TAG = "latest"


@dataclass(frozen=True)
class ModelCard:
    id: str
    family: str  # "llama"
    params: int
    precision: str  # "int8", "fp32"
    size_bytes: int
    context_tokens: int  # the plan's window
    modified_at: str  # ISO 8601

    @property
    def names(self) -> tuple[str, str]:
        return (f"{ALIAS}:{TAG}", f"{self.id}:{TAG}")

    def matches(self, name: str) -> bool:
        """Whether a client's model name means this model (the tag may be omitted)."""
        return name in self.names or f"{name}:{TAG}" in self.names

    @property
    def digest(self) -> str:
        # Stable for one model id: clients compare digests to notice a changed model.
        return hashlib.sha256(f"{self.id}:{self.precision}".encode()).hexdigest()

    def details(self) -> dict[str, Any]:
        return {
            "parent_model": "",
            "format": "onnx",
            "family": self.family,
            "families": [self.family],
            "parameter_size": _size(self.params),
            "quantization_level": self.precision.upper(),
        }

    def ollama_entries(self) -> list[dict[str, Any]]:
        """`GET /api/tags` entries, the alias first."""
        return [
            {
                "name": name,
                "model": name,
                "modified_at": self.modified_at,
                "size": self.size_bytes,
                "digest": self.digest,
                "details": self.details(),
            }
            for name in self.names
        ]


def _size(params: int) -> str:
    if params >= 1_000_000_000:
        return f"{params / 1e9:.1f}B"
    return f"{params / 1e6:.0f}M"


def not_found(name: str, card: ModelCard) -> str:
    return (
        f"model {name!r} not found; this server has {' and '.join(card.names)} "
        "and never downloads models"
    )


def card_for_plan(plan: Plan, model_dir: Path) -> ModelCard:
    """The planned model's card; its time is when the model folder was prepared."""
    try:
        stamp = (model_dir / "manifest.json").stat().st_mtime
    except OSError:
        stamp = 0.0
    modified = datetime.fromtimestamp(stamp, UTC).isoformat().replace("+00:00", "Z")
    spec = plan.model
    return ModelCard(
        id=spec.id,
        family="llama",  # every model `model prepare` builds is Llama-family
        params=spec.params,
        precision=spec.precision,
        size_bytes=round(spec.file_mb * 2**20),
        context_tokens=plan.context_tokens,
        modified_at=modified,
    )
