"""Each case's prompt text exactly as our service renders it: the server's own body parser
(`parse_chat`, as for `POST /api/chat`), the core's `generation_request` with the shipped
config (HA's tools written into the system turn, the decision, grounding, the grammar),
then the model's chat template. run.py times it (the service-side cost of a request with
tools); anchor_llamacpp.py feeds the same text to llama.cpp.
"""

from __future__ import annotations

import time

from evalcases import Case, chat_body

from assistant.config import EngineConfig
from assistant.core.prompt import generation_request
from assistant.http.ollama_schema import parse_chat
from assistant.model.manager import ModelInstance


def rendered_prompts(model: ModelInstance, cases: list[Case]) -> tuple[list[str], list[float]]:
    """(the prompt of each case, the ms `generation_request` took for it)."""
    prompts, costs = [], []
    for i, case in enumerate(cases):
        request = parse_chat(chat_body(case), f"e{i}", "eval").request
        started = time.perf_counter()
        generation = generation_request(request, EngineConfig())
        costs.append((time.perf_counter() - started) * 1000)
        chat = [{"role": role, "content": content} for role, content in generation.messages]
        prompts.append(model.render_chat(chat))
    return prompts, costs
