"""`edge-assistant serve`: probe, plan, then run the service until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from assistant.config import Config
from assistant.hardware import HardwareFacts
from assistant.model.errors import ModelError
from assistant.models_present import plan_for_this_machine
from assistant.plan import Plan, PlanError
from assistant.service import Service
from assistant.supervisor_api import SupervisorError, SupervisorStoppedError, broker_from_supervisor
from assistant.worker.process import WorkerStartError

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
    try:
        resolved = await _resolve_broker(config, stop)
    except SupervisorError as err:
        print(f"edge-assistant: {err}", file=sys.stderr)
        return 1
    if resolved is None:
        return 0  # stopped before any broker was up: nothing to clean up
    service = Service(resolved, facts, plan, folder)
    try:
        return await service.run(stop)
    except WorkerStartError as err:
        print(f"edge-assistant: {err}", file=sys.stderr)
        return 1


async def _resolve_broker(config: Config, stop: asyncio.Event) -> Config | None:
    """The broker to use (in an add-on, possibly after waiting for the Supervisor to name
    one); None when SIGTERM/SIGINT came first."""
    cancel = threading.Event()
    lookup = asyncio.ensure_future(
        asyncio.to_thread(broker_from_supervisor, config, dict(os.environ), cancel=cancel)
    )
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({lookup, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        cancel.set()  # ends the lookup's backoff wait; an attempt in flight is bounded
    try:
        resolved = await lookup
    except SupervisorStoppedError:
        return None
    return None if stop.is_set() else resolved
