"""`edge-assistant ask`: one prompt through the same engine the service uses, no MQTT."""

from __future__ import annotations

import json
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from assistant.config import Config
from assistant.engine.generate import Delta, Engine, GenerationRequest
from assistant.engine.sampling import SamplingParams
from assistant.errors import RequestError
from assistant.hardware import Probe
from assistant.model.errors import ModelError
from assistant.model.manager import ModelManager
from assistant.models_present import candidate_models
from assistant.plan import PlanError, make_plan
from assistant.replies import error_payload, reply_payload


@dataclass(frozen=True)
class AskOptions:
    text: str
    json: bool = False
    max_tokens: int | None = None
    temperature: float | None = None


def run_ask(options: AskOptions, config: Config, models_dir: Path) -> int:
    """Answer one prompt; stream text to stdout (or print the reply object with --json)."""
    facts = Probe().facts(models_dir)
    try:
        plan = make_plan(facts, config, candidate_models(models_dir))
        model = ModelManager(models_dir).load_model(plan.model.id, threads=plan.threads)
    except (PlanError, ModelError) as err:
        print(f"edge-assistant: {err}", file=sys.stderr)
        return 1
    engine = Engine.from_model(model, plan.context_tokens)
    eng = config.engine
    max_tokens = min(options.max_tokens or eng.max_tokens, eng.max_tokens)
    temperature = eng.temperature if options.temperature is None else options.temperature
    messages = []
    if eng.system_prompt:
        messages.append(("system", eng.system_prompt))
    messages.append(("user", options.text))
    request = GenerationRequest(
        id=uuid.uuid4().hex[:12],
        messages=tuple(messages),
        max_tokens=max_tokens,
        sampling=SamplingParams(temperature=temperature),
    )
    try:
        for event in engine.generate(request):
            if isinstance(event, Delta):
                if not options.json:
                    sys.stdout.write(event.text)
                    sys.stdout.flush()
            elif event.result is not None:
                if options.json:
                    print(json.dumps(reply_payload(event.result, engine.model_id)))
                else:
                    sys.stdout.write("\n")
    except RequestError as err:
        if options.json:
            print(json.dumps(error_payload(request.id, err)))
        else:
            print(f"edge-assistant: {err.code}: {err.message}", file=sys.stderr)
        return 1
    return 0
