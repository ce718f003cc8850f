"""`edge-assistant ask`: one prompt through the same sandboxed worker the service uses."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from assistant.config import Config
from assistant.core.events import Delta
from assistant.engine.request import GenerationRequest, SamplingParams
from assistant.model.errors import ModelError
from assistant.models_present import plan_for_this_machine
from assistant.plan import PlanError
from assistant.replies import error_payload, reply_payload
from assistant.worker.launch import start_spec
from assistant.worker.protocol import StartSpec
from assistant.worker.supervisor import Supervisor, WorkerStartError

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class AskOptions:
    text: str
    json: bool = False
    max_tokens: int | None = None
    temperature: float | None = None


def build_request(options: AskOptions, config: Config) -> GenerationRequest:
    eng = config.engine
    max_tokens = min(options.max_tokens or eng.max_tokens, eng.max_tokens)
    temperature = eng.temperature if options.temperature is None else options.temperature
    messages = []
    if eng.system_prompt:
        messages.append(("system", eng.system_prompt))
    messages.append(("user", options.text))
    return GenerationRequest(
        id=uuid.uuid4().hex[:12],
        messages=tuple(messages),
        max_tokens=max_tokens,
        sampling=SamplingParams(temperature=temperature),
    )


def run_ask(options: AskOptions, config: Config, models_dir: Path) -> int:
    """Answer one prompt; stream text to stdout (or print the reply object with --json)."""
    try:
        _, plan, folder = plan_for_this_machine(config, models_dir)
    except (PlanError, ModelError) as err:
        print(f"edge-assistant: {err}", file=sys.stderr)
        return 1
    return asyncio.run(_ask(options, config, start_spec(plan, config, folder)))


async def _ask(options: AskOptions, config: Config, spec: StartSpec) -> int:
    supervisor = Supervisor(spec, log_level=config.log_level)
    try:
        hello = await supervisor.start()
    except WorkerStartError as err:
        print(f"edge-assistant: {err}", file=sys.stderr)
        return 1
    request = build_request(options, config)
    code = 0
    try:
        async for event in supervisor.submit(request).stream():
            if isinstance(event, Delta):
                if not options.json:
                    sys.stdout.write(event.text)
                    sys.stdout.flush()
            elif event.result is not None:
                if options.json:
                    print(json.dumps(reply_payload(event.result, hello.model_id)))
                else:
                    sys.stdout.write("\n")
            elif event.error is not None:
                code = 1
                if options.json:
                    print(json.dumps(error_payload(request.id, event.error)))
                else:
                    print(
                        f"edge-assistant: {event.error.code}: {event.error.message}",
                        file=sys.stderr,
                    )
    finally:
        await supervisor.stop()
    return code
