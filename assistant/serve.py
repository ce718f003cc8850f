"""`edge-assistant serve`: probe, plan, then run the service until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path

from assistant.config import Config
from assistant.hardware import HardwareFacts
from assistant.model.errors import ModelError
from assistant.models_present import plan_for_this_machine
from assistant.plan import Plan, PlanError
from assistant.service import Service
from assistant.worker.supervisor import WorkerStartError

LOG = logging.getLogger(__name__)


def run_serve(config: Config, models_dir: Path) -> int:
    try:
        facts, plan, folder = plan_for_this_machine(config, models_dir)
    except (PlanError, ModelError) as err:
        print(f"edge-assistant: {err}", file=sys.stderr)
        return 1
    values = plan.to_dict()
    for key, reason in plan.reasons.items():
        LOG.info("plan: %s = %s (%s)", key, values.get(key), reason)
    return asyncio.run(_serve(config, facts, plan, folder))


async def _serve(config: Config, facts: HardwareFacts, plan: Plan, folder: Path) -> int:
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
