"""The page's static part: the plan with its reasons, the doctor table, the sandbox
layers and the models present."""

from __future__ import annotations

from typing import Any

from assistant import __version__
from assistant.doctor import requirement_table
from assistant.hardware import HardwareFacts
from assistant.plan import ModelSpec, Plan


def _model(spec: ModelSpec, in_use: bool) -> dict[str, Any]:
    return {
        "id": spec.id,
        "in_use": in_use,
        "precision": spec.precision,
        "params": spec.params,
        "file_mb": round(spec.file_mb, 1),
        "context_max": spec.context_max,
    }


def _sandbox(hello: dict[str, Any] | None) -> dict[str, Any]:
    """The worker's hello report as rows: layer, state, what it did."""
    if hello is None:  # the worker has not started yet
        return {"enabled": None, "order": None, "layers": []}
    if not hello.get("enabled"):
        return {"enabled": False, "order": None, "layers": []}
    layers = hello.get("layers") or {}
    details = hello.get("details") or {}
    rows = [
        {"layer": name, "state": str(state), "detail": str(details.get(name, ""))}
        for name, state in layers.items()
    ]
    return {"enabled": True, "order": hello.get("order"), "layers": rows}


def describe(
    *,
    instance: str,
    facts: HardwareFacts,
    plan: Plan,
    sandbox: dict[str, Any] | None,
    present: list[ModelSpec],
) -> dict[str, Any]:
    """`sandbox`: the worker's report in its hello (None: no worker yet)."""
    models = [_model(spec, spec.id == plan.model.id) for spec in present]
    if not any(m["in_use"] for m in models):  # e.g. a model folder outside models.dir
        models.insert(0, _model(plan.model, True))
    return {
        "version": __version__,
        "instance": instance,
        "model": _model(plan.model, True),
        "models": models,
        "plan": plan.to_dict(),
        "requirements": [row.__dict__ for row in requirement_table(facts)],
        "hardware": facts.to_dict(),
        "sandbox": _sandbox(sandbox),
    }
