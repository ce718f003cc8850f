"""Home evaluation: HA-format requests for a 12-entity home (home.txt) through the core's
request path (generation_request: tools in the prompt, the decision, grounding, grammar)
on the real default model, greedy. Prints per-category figures and the decode-speed cost
of a grammar at batch 1 and 8.

    .venv/bin/python benchmarks/home_eval/run.py

Second turns replay the call HA would have run and a success result; the reply must be
text (one line, no call). Not yet through /api/chat: the same Request the HTTP front end
builds, handed to the engine in-process.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema

from assistant.config import EngineConfig
from assistant.core.events import Finished, GenerationResult, ToolCall
from assistant.core.prompt import generation_request
from assistant.core.request import Message, Request, Sampling, Tool
from assistant.engine.batch import Batch, generate
from assistant.engine.engine import Engine
from assistant.engine.request import GenerationRequest
from assistant.model.manager import ModelInstance
from assistant.model.paths import default_models_dir

HERE = Path(__file__).resolve().parent
HA = HERE.parents[1] / "tests" / "data" / "ha" / "ollama_chat_first_turn_ha2026.2.3.json"


def ha_parts() -> tuple[str, list[Tool]]:
    body = json.loads(HA.read_text())
    system = body["messages"][0]["content"].split("Static Context:", maxsplit=1)[0]
    tools = [
        Tool(t["function"]["name"], t["function"]["description"], t["function"]["parameters"])
        for t in body["tools"]
    ]
    return system + (HERE / "home.txt").read_text(), tools


def turns(kind: str, sentence: str, tool: str, target: str) -> list[Message]:
    if kind != "second":
        return [Message("user", sentence)]
    args = dict([target.split("=", 1)]) if target else {}
    result: dict[str, Any] = {"response_type": "action_done", "data": {"success": [{"n": 1}]}}
    if tool == "GetLiveContext":
        result = {"success": True, "result": "- names: Garage Door\n  state: closed"}
    return [
        Message("user", sentence),
        Message("assistant", "", (ToolCall(tool, args),)),
        Message("tool", json.dumps(result)),
    ]


def judge(kind: str, row: list[str], result: GenerationResult, tools: dict[str, Tool]) -> bool:
    _, _, tool, target, *answer = [*row, ""]
    if kind in ("command", "state"):
        if len(result.tool_calls) != 1 or result.tool_calls[0].name != tool:
            return False
        if not target:
            return True
        key, value = target.split("=", 1)
        return result.tool_calls[0].arguments.get(key) == value
    if kind == "second":
        return not result.tool_calls and bool(result.text) and "\n" not in result.text
    expected = answer[0] if answer else ""
    text_ok = not result.tool_calls and bool(result.text.strip())
    return text_ok and (not expected or bool(re.search(expected, result.text, re.I)))


def well_formed(result: GenerationResult, tools: dict[str, Tool]) -> bool:
    for call in result.tool_calls:
        try:
            jsonschema.validate(call.arguments, tools[call.name].parameters)
        except (KeyError, jsonschema.ValidationError):
            return False
    return True


def run_one(engine: Engine, request: GenerationRequest) -> GenerationResult:
    final = list(generate(engine, request))[-1]
    assert isinstance(final, Finished) and final.result is not None, final
    return final.result


def evaluate(engine: Engine) -> None:
    system, tools = ha_parts()
    by_name = {t.name: t for t in tools}
    rows = [line.split("\t") for line in (HERE / "cases.tsv").read_text().splitlines()]
    stats: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        kind, sentence, tool, target = row[:4]
        request = Request(
            f"e{len(stats)}",
            "http",
            "eval",
            messages=(Message("system", system), *turns(kind, sentence, tool, target)),
            tools=tuple(tools),
            sampling=Sampling(temperature=0.0),
        )
        started = time.perf_counter()
        generation = generation_request(request, EngineConfig())
        decide_ms = (time.perf_counter() - started) * 1000
        result = run_one(engine, generation)
        entry = stats.setdefault(kind, {"ok": [], "wf": [], "ttft": [], "decide": []})
        entry["ok"].append(judge(kind, row, result, by_name))
        entry["wf"].append(well_formed(result, by_name))
        entry["ttft"].append(result.timing.first_token_ms)
        entry["decide"].append(decide_ms)
        if not entry["ok"][-1]:
            print(f"  miss [{kind}] {sentence!r}: {result.tool_calls or result.text[:80]!r}")
    print("| category | n | correct | well-formed calls | first token p50 ms | decide p50 ms |")
    print("|---|---|---|---|---|---|")
    for kind, e in stats.items():
        n = len(e["ok"])
        print(
            f"| {kind} | {n} | {sum(e['ok'])}/{n} ({100 * sum(e['ok']) / n:.0f}%) "
            f"| {sum(e['wf'])}/{n} | {statistics.median(e['ttft']):.0f} "
            f"| {statistics.median(e['decide']):.2f} |"
        )


def decode_speed(engine: Engine, grammar: str | None, batch_size: int) -> float:
    """Decode tokens/s over `batch_size` rows of 64 tokens each (prefill excluded)."""
    batch = Batch(engine, max_batch=batch_size)
    for i in range(batch_size):
        request = GenerationRequest(
            f"s{i}", (("user", f"Tell me a long story about a dragon number {i}."),), 64
        )
        batch.add(replace(request, grammar=grammar))
    speeds = []
    while batch.busy:
        for event in batch.step():
            if isinstance(event, Finished) and event.result is not None:
                speeds.append(event.result.timing.tokens_per_s)
    return sum(speeds)


def speed(engine: Engine) -> None:
    from assistant.core.grammar import Narrowing, tools_grammar  # noqa: PLC0415

    _, tools = ha_parts()
    text_grammar = tools_grammar(tools, Narrowing(calls=True))  # text or calls, open choice
    print("| batch | free tok/s | under the tools grammar tok/s | cost |")
    print("|---|---|---|---|")
    for size in (1, 8):
        free = statistics.median(decode_speed(engine, None, size) for _ in range(3))
        bound = statistics.median(decode_speed(engine, text_grammar, size) for _ in range(3))
        print(f"| {size} | {free:.0f} | {bound:.0f} | {100 * (1 - bound / free):+.1f}% |")


def main() -> None:
    folder = default_models_dir() / "smollm2-135m-instruct-int8"
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    engine = Engine.from_model(ModelInstance.load(folder, threads=threads), 8192)
    evaluate(engine)
    speed(engine)


if __name__ == "__main__":
    main()
