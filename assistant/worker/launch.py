"""From the plan and config to the worker's start message."""

from __future__ import annotations

import logging
from pathlib import Path

from assistant.config import Config
from assistant.plan import Plan
from assistant.worker.protocol import StartSpec

LOG = logging.getLogger(__name__)
# Address space is not resident memory: Python, onnxruntime's thread stacks and glibc's
# arenas reserve far more than they touch (measured: ~530 MB VmSize at ~310 MB RSS).
ADDRESS_SPACE_HEADROOM_MB = 768


def start_spec(plan: Plan, config: Config, model_dir: Path) -> StartSpec:
    if not config.sandbox.enabled:
        LOG.warning("sandbox.enabled is false: the model runs in a plain, unconfined subprocess")
    return StartSpec(
        model_path=str(model_dir),
        threads=plan.threads,
        context_tokens=plan.context_tokens,
        max_batch=plan.max_batch,
        kv_budget_bytes=plan.kv_cache_mb * 2**20,
        sandbox=config.sandbox.enabled,
        memory_bytes=(plan.worker_memory_mb + ADDRESS_SPACE_HEADROOM_MB) * 2**20,
    )
