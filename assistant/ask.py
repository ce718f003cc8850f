"""`edge-assistant ask`: one prompt through the same core and sandboxed worker the service
uses; a thin translator from the command line to a `Request` and back."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from assistant.config import Config
from assistant.core.core import Core
from assistant.core.events import Delta, Finished
from assistant.core.request import Request, Sampling
from assistant.model.errors import ModelError
from assistant.models_present import plan_for_this_machine
from assistant.plan import PlanError
from assistant.replies import ErrorReply, Reply
from assistant.worker.process import WorkerStartError


@dataclass(frozen=True)
class AskOptions:
    text: str
    json: bool = False
    max_tokens: int | None = None
    temperature: float | None = None


def build_request(options: AskOptions) -> Request:
    return Request(
        id=uuid.uuid4().hex[:12],
        front_end="cli",
        client="cli",
        text=options.text,
        max_tokens=options.max_tokens,
        sampling=Sampling(temperature=options.temperature),
    )


def run_ask(options: AskOptions, config: Config, models_dir: Path) -> int:
    """Answer one prompt; stream text to stdout (or print the reply object with --json)."""
    try:
        _, plan, folder = plan_for_this_machine(config, models_dir)
    except (PlanError, ModelError) as err:
        print(f"edge-assistant: {err}", file=sys.stderr)
        return 1
    return asyncio.run(_ask(options, Core.for_plan(config, plan, folder)))


async def _ask(options: AskOptions, core: Core) -> int:
    try:
        await core.start()
    except WorkerStartError as err:
        print(f"edge-assistant: {err}", file=sys.stderr)
        return 1
    try:
        async for event in core.submit(build_request(options)).events():
            if isinstance(event, Delta):
                if not options.json:
                    sys.stdout.write(event.text)
                    sys.stdout.flush()
            else:
                return _final(event, options, core.model_id)
    finally:
        await core.drain(0.0)
        await core.close()
    return 1  # not reached: the events end with a Finished


def _final(event: Finished, options: AskOptions, model_id: str) -> int:
    if event.result is not None:
        if options.json:
            print(json.dumps(Reply.of(event.result, model_id).to_payload()))
        else:
            sys.stdout.write("\n")
        return 0
    error = ErrorReply.of(event.id, event.error)
    if options.json:
        print(json.dumps(error.to_payload()))
    else:
        print(f"edge-assistant: {error.code}: {error.message}", file=sys.stderr)
    return 1
