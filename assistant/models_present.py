"""The candidates the plan chooses from: the models prepared in the models directory, plus
the default model, which `edge-assistant model prepare` can always build offline."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from assistant.config import Config
from assistant.hardware import HardwareFacts, Probe
from assistant.model.paths import resolve_model_dir
from assistant.plan import DEFAULT_MODEL_ID, KNOWN_MODELS, ModelSpec, Plan, make_plan

LOG = logging.getLogger(__name__)
MANIFEST = "manifest.json"


def spec_from_manifest(manifest: dict[str, Any], folder: Path) -> ModelSpec:
    """A plan-ready description of one prepared model folder."""
    arch = manifest.get("config", {})
    size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    graph = manifest.get("graph", {}).get("after", {})
    return ModelSpec(
        id=str(manifest["id"]),
        params=int(manifest.get("parameters", 0)),
        precision="fp32" if manifest.get("precision") == "fp32" else "int8",
        file_mb=size / 2**20,
        n_layers=int(arch.get("n_layers", 0)),
        n_kv_heads=int(arch.get("n_kv_heads", 0)),
        head_dim=int(arch.get("head_dim", 0)),
        context_max=int(manifest.get("context_length", 2048)),
        weight_bytes_per_token=int(graph.get("weight_bytes_per_token", 0)),
    )


def present_models(models_dir: Path) -> list[ModelSpec]:
    """Every folder in `models_dir` with a readable manifest; broken ones are logged."""
    found: list[ModelSpec] = []
    if not models_dir.is_dir():
        return found
    for manifest_path in sorted(models_dir.glob(f"*/{MANIFEST}")):
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            found.append(spec_from_manifest(manifest, manifest_path.parent))
        except (OSError, ValueError, KeyError, TypeError) as err:
            LOG.warning("ignoring %s: unreadable manifest (%s)", manifest_path.parent, err)
    return found


def candidate_models(models_dir: Path) -> list[ModelSpec]:
    present = present_models(models_dir)
    if not any(m.id == DEFAULT_MODEL_ID for m in present):
        present.append(KNOWN_MODELS[0])
    return present


def plan_for_this_machine(config: Config, models_dir: Path) -> tuple[HardwareFacts, Plan, Path]:
    """Probe, plan, and find the planned model's folder (what `serve` and `ask` start from).
    Raises PlanError or ModelError (e.g. the model is not prepared yet)."""
    facts = Probe().facts(models_dir)
    plan = make_plan(facts, config, candidate_models(models_dir))
    return facts, plan, resolve_model_dir(models_dir, plan.model.id)
