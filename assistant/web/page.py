"""Opening the page from the service: one call with the service's pieces."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from assistant.config import WebConfig
from assistant.core.core import Core
from assistant.hardware import HardwareFacts
from assistant.models_present import present_models
from assistant.plan import Plan
from assistant.web.app import PageServer, PageSources, listener_for
from assistant.web.describe import describe
from assistant.web.history import History
from assistant.web.requests_log import RequestLog

LOG = logging.getLogger(__name__)


async def open_page(
    config: WebConfig,
    core: Core,
    sample: Callable[[], dict[str, Any]],
    *,
    instance: str,
    facts: HardwareFacts,
    plan: Plan,
    models_dir: Path,
    env: Mapping[str, str] | None = None,
) -> PageServer:
    """Bind the page's listener and start sampling (OSError when the port is taken).
    `sample` builds the telemetry payload, as MQTT's; the page calls it every second."""
    log = RequestLog(keep_prompts=config.keep_prompts)
    core.observers.append(log.record)
    present = present_models(models_dir)

    def info() -> dict[str, Any]:
        hello = core.worker.hello  # the sandbox layers, once the worker has started
        sandbox = hello.sandbox if hello is not None else None
        return describe(instance=instance, facts=facts, plan=plan, sandbox=sandbox, present=present)

    listener = listener_for(config, os.environ if env is None else env)
    server = PageServer(PageSources(core, History(sample), log, info), listener)
    await server.start()
    if listener.only_peer is not None:
        LOG.info("page: HA ingress on port %d (only from %s)", server.port, listener.only_peer)
    else:
        LOG.info("page: http://%s:%d/", listener.host, server.port)
    return server
