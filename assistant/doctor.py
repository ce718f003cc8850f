"""`edge-assistant doctor`: what the machine is, how it compares with the seed article's
requirement table, and the plan chosen for it, with reasons."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from assistant import __version__
from assistant.hardware import HardwareFacts
from assistant.plan import Plan

FAST_STORAGE = ("nvme",)


@dataclass(frozen=True)
class Requirement:
    requirement: str
    detected: str
    verdict: str  # "ok", "below" or "unknown"


def requirement_table(facts: HardwareFacts) -> list[Requirement]:
    """The seed article's table: CPU ≥ 4 cores, memory ≥ 8 GB, NVMe SSD, power ≤ 65 W."""
    cores = f"{facts.cores} usable ({facts.logical_cpus} on the host"
    cores += f", quota {facts.cpu_quota:g})" if facts.cpu_quota is not None else ")"
    mem_gb = facts.memory_mb / 1024
    mem = f"{mem_gb:.1f} GB"
    if facts.memory_limit_mb is not None and facts.memory_limit_mb < facts.memory_total_mb:
        mem += f" (cgroup limit; host {facts.memory_total_mb / 1024:.1f} GB)"
    storage_verdict = (
        "unknown"
        if facts.storage == "unknown"
        else "ok"
        if facts.storage in FAST_STORAGE
        else "below"
    )
    power = (
        Requirement(
            "power ≤ 65 W",
            f"{facts.power_limit_w:.0f} W package limit (RAPL)",
            "ok" if facts.power_limit_w <= 65 else "below",
        )
        if facts.power_limit_w is not None
        else Requirement("power ≤ 65 W", "unknown (not readable on this machine)", "unknown")
    )
    return [
        Requirement("CPU cores ≥ 4", cores, "ok" if facts.cores >= 4 else "below"),
        # 7.5: an "8 GB" machine reports a little under 8 GiB after firmware reservations.
        Requirement("memory ≥ 8 GB", mem, "ok" if mem_gb >= 7.5 else "below"),
        Requirement("storage NVMe SSD", facts.storage.replace("_", "/"), storage_verdict),
        power,
    ]


def report(
    facts: HardwareFacts,
    plan: Plan,
    config_public: dict[str, Any],
    sandbox: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The JSON form: stable keys for tools. `sandbox`: layer → support on this machine
    (None when the sandbox is disabled in the config)."""
    return {
        "version": __version__,
        "hardware": facts.to_dict(),
        "requirements": [r.__dict__ for r in requirement_table(facts)],
        "plan": plan.to_dict(),
        "sandbox": sandbox,
        "config": config_public,
    }


def render_text(
    facts: HardwareFacts, plan: Plan, config_source: str, sandbox: dict[str, str] | None = None
) -> str:
    """The human form: three short sections that fit an 80-column terminal."""
    features = ", ".join(sorted(facts.cpu_features)) or "none of note"
    temp = f"{facts.cpu_temp_c:.1f} °C" if facts.cpu_temp_c is not None else "unknown"
    lines = [
        f"Edge Assistant {__version__} — doctor (config: {config_source})",
        "",
        "Hardware",
        f"  cpu            {facts.cpu_model or 'unknown'} ({facts.arch})",
        f"  cores          {facts.cores} usable of {facts.logical_cpus}",
        f"  int8 features  {features}",
        f"  memory         {facts.memory_available_mb} MB available of {facts.memory_mb} MB",
        f"  storage        {facts.storage}",
        f"  temperature    {temp}",
        f"  board          {facts.board or 'unknown'}",
        f"  providers      {', '.join(facts.providers) or 'onnxruntime not installed'}",
        "",
        "Requirements (from the seed article)",
    ]
    table = requirement_table(facts)
    width = max(len(r.requirement) for r in table)
    for row in table:
        lines.append(f"  {row.requirement:<{width}}  {row.verdict:<7}  {row.detected}")
    lines += ["", "Plan"]
    values = plan.to_dict()
    for key, reason in plan.reasons.items():
        lines.append(f"  {key:<17}{values[key]}")
        lines.append(f"  {'':<17}{reason}")
    estimate = f"{plan.est_decode_tok_s:.0f} tok/s (an estimate, not a measurement)"
    lines.append(f"  {'est. decode':<17}{estimate}")
    lines += ["", "Worker sandbox"]
    if sandbox is None:
        lines.append("  disabled (sandbox.enabled: false): the model runs unconfined")
    else:
        for layer, state in sandbox.items():
            lines.append(f"  {layer:<17}{state[:80]}")
    return "\n".join(lines)
