"""Home evaluation through the real HTTP API: every case is a `POST /api/chat` to a running
`edge-assistant serve` (subprocess, sandboxed worker, private Mosquitto), with the body
Home Assistant sends (evalcases.py: HA 2026.2.3's captured body, our 12-entity home as its
Static Context), read back HA's way (the NDJSON stream, calls in `message.tool_calls`).

    .venv/bin/python benchmarks/home_eval/run.py [--rounds 3] [--threads 2] [--no-speed]

HA sends no temperature and no seed, so the shipped defaults sample: with a default
temperature above 0 each round is a fresh draw, and the table shows the rounds' spread.
Per category: correct (evalcases.judge), well-formed calls (arguments validate against the
tool's schema), and at the client: time to the first NDJSON line and to the last, p50; the
engine's own first token (Ollama's durations) too. A reply with a call streams no text: its
first line is the call, after the whole reply.

Also (in-process, the same code the service runs): the service-side cost of a request with
tools (`generation_request`: render, Static Context, decision, grammar), and the
decode-speed cost of a grammar at batch 1 and 8. Writes benchmarks/out/home_eval.json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from evalcases import ALIAS, KINDS, Call, Case, chat_body, judge, load_cases, well_formed
from evalprompts import rendered_prompts
from evalservice import REPO, serve

from assistant.core.events import Finished
from assistant.engine.batch import Batch
from assistant.engine.engine import Engine
from assistant.engine.request import GenerationRequest
from assistant.model.manager import ModelInstance
from assistant.model.paths import default_models_dir

OUT = REPO / "benchmarks" / "out" / "home_eval.json"
MODEL = "smollm2-135m-instruct-int8"


@dataclass(frozen=True)
class Reply:
    text: str
    calls: list[Call]
    first_ms: float  # client: request sent -> first NDJSON line
    total_ms: float  # client: request sent -> last line
    engine_first_ms: float  # the engine's first token, from Ollama's durations


def post_chat(port: int, body: dict[str, Any]) -> Reply:
    """One `/api/chat` request read as HA's ollama client reads it."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    started = time.perf_counter()
    conn.request("POST", "/api/chat", json.dumps(body), {"Content-Type": "application/json"})
    response = conn.getresponse()
    if response.status != 200:
        raise RuntimeError(f"/api/chat: {response.status} {response.read()[:200]!r}")
    text, calls, first, last = "", [], 0.0, {}
    for raw in response:
        if not raw.strip():
            continue
        first = first or time.perf_counter() - started
        last = json.loads(raw)
        if "error" in last:
            raise RuntimeError(f"/api/chat streamed an error: {last['error']}")
        message = last.get("message", {})
        text += message.get("content", "")
        calls += [
            (c["function"]["name"], c["function"]["arguments"])
            for c in message.get("tool_calls", [])
        ]
    total = time.perf_counter() - started
    conn.close()
    engine_first = (last["total_duration"] - last["eval_duration"]) / 1e6
    return Reply(text, calls, first * 1000, total * 1000, engine_first)


def evaluate(port: int, cases: list[Case], rounds: int) -> dict[str, Any]:
    """Every case `rounds` times; per category and round: correct, well-formed, times."""
    per: dict[str, dict[str, Any]] = {
        k: {"ok": [[] for _ in range(rounds)], "wf": [], "first": [], "total": [], "engine": []}
        for k in KINDS
    }
    misses: list[str] = []
    for r in range(rounds):
        for case in cases:
            reply = post_chat(port, chat_body(case))
            entry = per[case.kind]
            entry["ok"][r].append(judge(case, reply.text, reply.calls))
            entry["wf"].append(well_formed(reply.calls))
            entry["first"].append(reply.first_ms)
            entry["total"].append(reply.total_ms)
            entry["engine"].append(reply.engine_first_ms)
            if not entry["ok"][r][-1]:
                got = reply.calls or reply.text[:80]
                misses.append(f"round {r + 1} [{case.kind}] {case.sentence!r}: {got!r}")
    return {"per": per, "misses": misses}


def print_table(results: dict[str, Any], rounds: int) -> None:
    print(
        "| category | n | correct (all rounds) | per round | well-formed calls "
        "| first line p50 ms | total p50 ms | engine first token p50 ms |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for kind, e in results["per"].items():
        n = len(e["ok"][0])
        right = [sum(r) for r in e["ok"]]
        print(
            f"| {kind} | {n} | {sum(right)}/{n * rounds} ({100 * sum(right) / (n * rounds):.0f}%) "
            f"| {', '.join(str(x) for x in right)} | {sum(e['wf'])}/{len(e['wf'])} "
            f"| {statistics.median(e['first']):.0f} | {statistics.median(e['total']):.0f} "
            f"| {statistics.median(e['engine']):.0f} |"
        )
    for miss in results["misses"]:
        print(f"  miss {miss}")


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


def speed(engine: Engine) -> list[dict[str, float]]:
    from evalcases import tools  # noqa: PLC0415

    from assistant.core.grammar import Narrowing, tools_grammar  # noqa: PLC0415
    from assistant.http.chat_schema import parse_tools  # noqa: PLC0415

    grammar = tools_grammar(parse_tools(tools()), Narrowing(calls=True))  # text or calls
    rows = []
    print("| batch | free tok/s | under the tools grammar tok/s | cost |")
    print("|---|---|---|---|")
    for size in (1, 8):
        free = statistics.median(decode_speed(engine, None, size) for _ in range(3))
        bound = statistics.median(decode_speed(engine, grammar, size) for _ in range(3))
        print(f"| {size} | {free:.0f} | {bound:.0f} | {100 * (1 - bound / free):+.1f}% |")
        rows.append({"batch": size, "free": free, "grammar": bound})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-speed", action="store_true")
    args = parser.parse_args()
    folder = default_models_dir() / MODEL
    cases = load_cases()
    with tempfile.TemporaryDirectory() as scratch, serve(Path(scratch), folder) as port:
        results = evaluate(port, cases, args.rounds)
    print_table(results, args.rounds)
    model = ModelInstance.load(folder, threads=args.threads)
    _, costs = rendered_prompts(model, cases)
    print(
        "service-side cost of a request with tools (in-process): "
        f"p50 {statistics.median(costs):.2f} ms"
    )
    out: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "rounds": args.rounds,
        "results": results,
        "decide_ms_p50": statistics.median(costs),
        "model": MODEL,
        "alias": ALIAS,
    }
    if not args.no_speed:
        out["speed"] = speed(Engine.from_model(model, 8192))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
