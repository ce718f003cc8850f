"""`edge-assistant serve`: probe, plan, then run the service until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path

from assistant.config import Config
from assistant.hardware import Probe
from assistant.model.errors import ModelError
from assistant.model.manager import ModelManager
from assistant.models_present import candidate_models
from assistant.plan import PlanError, make_plan
from assistant.worker.supervisor import WorkerStartError

LOG = logging.getLogger(__name__)


def run_serve(config: Config, models_dir: Path) -> int:
    facts = Probe().facts(models_dir)
    try:
        plan = make_plan(facts, config, candidate_models(models_dir))
        folder = ModelManager(models_dir).resolve(plan.model.id)
    except (PlanError, ModelError) as err:
        print(f"edge-assistant: {err}", file=sys.stderr)
        return 1
    for key, reason in plan.reasons.items():
        LOG.info("plan: %s = %s (%s)", key, plan.to_dict().get(key, plan.model.id), reason)
    return asyncio.run(_serve(config, facts, plan, folder))


async def _serve(config: Config, facts: object, plan: object, folder: Path) -> int:
    from assistant.hardware import HardwareFacts  # noqa: PLC0415
    from assistant.plan import Plan  # noqa: PLC0415
    from assistant.service import Service  # noqa: PLC0415

    assert isinstance(facts, HardwareFacts) and isinstance(plan, Plan)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    service = Service(config, facts, plan, folder)
    try:
        return await service.run(stop)
    except WorkerStartError as err:
        print(f"edge-assistant: {err}", file=sys.stderr)
        return 1
