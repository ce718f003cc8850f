"""Throughput and latency through the scheduler on the real model, at 1-16 concurrent requests.

    .venv/bin/python benchmarks/scheduler_bench.py [--model DIR] [--max-batch 8] [--threads 2]

Measures, with greedy decoding and mixed prompt lengths (64-128 new tokens each):
aggregate tokens/s and p50/p95 latency and time to first token at each concurrency; a lone
request through scheduler + sandboxed worker vs the bare engine in this process; and the
time to first token of a priority-10 request arriving behind 16 queued priority-0 ones.
Writes JSON to benchmarks/out/scheduler.json.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from assistant.config import SchedulerConfig
from assistant.core.events import Delta, Finished
from assistant.core.flight import Flight
from assistant.engine.batch import Batch
from assistant.engine.engine import Engine
from assistant.engine.request import GenerationRequest
from assistant.model.manager import ModelInstance
from assistant.model.paths import default_models_dir
from assistant.scheduler import TaskScheduler
from assistant.worker.protocol import StartSpec
from assistant.worker.supervisor import Supervisor

HERE = Path(__file__).resolve().parent
DEFAULT_MODEL = "smollm2-135m-instruct-int8"
CONTEXT_TOKENS = 2048
CONCURRENCY = (1, 2, 4, 8, 16)
TARGET_SPEEDUP_AT_8 = 3.0
TARGET_OVERHEAD = 0.05
TARGET_PRIORITY_TTFT = 2.0
QUESTIONS = (
    "Write a long, detailed guide to keeping a house tidy, room by room.",
    "Explain step by step how a thermostat keeps a room warm, in detail.",
    "Tell a long story about a cat who learns to open the fridge.",
    "Describe in detail how to plan a vegetable garden for a small yard.",
)


@dataclass(frozen=True)
class Sample:
    """One request's outcome, seconds from its submission."""

    ttft_s: float
    latency_s: float
    tokens: int
    prompt_tokens: int


def prompts(count: int, with_context: bool = True) -> list[GenerationRequest]:
    """Greedy requests with prompts of ~40 to ~450 tokens (only the ~40-token question
    without `with_context`) and 64-128 new tokens."""
    text = (HERE / "data" / "english.txt").read_text(encoding="utf-8").split()
    requests = []
    for i in range(count):
        context_words = (0, 60, 150, 300)[i % 4] if with_context else 0
        start = (i * 37) % max(1, len(text) - context_words)
        context = " ".join(text[start : start + context_words])
        question = QUESTIONS[(i // 4) % len(QUESTIONS)]
        content = f"{context}\n\n{question}" if context else question
        max_tokens = 64 + (i * 23) % 65
        prefix = "b" if with_context else "s"
        requests.append(GenerationRequest(f"{prefix}{i}", (("user", content),), max_tokens))
    return requests


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[int(q) - 1]


async def measure(sch: TaskScheduler, request: GenerationRequest, priority: int = 0) -> Sample:
    started = time.perf_counter()
    handle = sch.submit_task(Flight(request.id, request, priority=priority))
    return await sample(handle, started)


async def sample(handle: Flight, started: float) -> Sample:
    first: float | None = None
    final: Finished | None = None
    async for event in handle.events():
        if isinstance(event, Delta):
            first = first or time.perf_counter()
        else:
            final = event
    end = time.perf_counter()
    if final is None or final.result is None:
        raise RuntimeError(f"{handle.id} failed: {final.error if final else 'no final'}")
    usage = final.result.usage
    ttft = (first or end) - started
    return Sample(ttft, end - started, usage.completion_tokens, usage.prompt_tokens)


def renamed(request: GenerationRequest, tag: str) -> GenerationRequest:
    return GenerationRequest(
        f"{request.id}-{tag}", request.messages, request.max_tokens, request.sampling
    )


def salted(request: GenerationRequest, tag: str) -> GenerationRequest:
    """`renamed`, its message starting with the tag: the worker keeps the KV cache of
    recent prompts, and a prompt seen at an earlier concurrency level must not skip its
    prefill at this one (only the chat template's system turn is shared, as in use)."""
    (role, content), *_ = request.messages
    messages = ((role, f"Request {request.id}-{tag}. {content}"),)
    return GenerationRequest(f"{request.id}-{tag}", messages, request.max_tokens, request.sampling)


Row = dict[str, float]


async def concurrency_rows(
    sch: TaskScheduler, pool: list[GenerationRequest], levels: tuple[int, ...]
) -> list[Row]:
    rows = []
    for n in levels:
        rounds = max(1, 16 // n) if n < 8 else (2 if n == 8 else 1)
        samples: list[Sample] = []
        wall = 0.0
        for r in range(rounds):
            tag = f"c{n}r{r}x{sch.reserved_slots}"
            batch = [salted(pool[(r * n + i) % len(pool)], tag) for i in range(n)]
            started = time.perf_counter()
            samples += await asyncio.gather(*(measure(sch, q) for q in batch))
            wall += time.perf_counter() - started
        tokens = sum(s.tokens for s in samples)
        row: Row = {
            "concurrency": n,
            "requests": len(samples),
            "tokens": tokens,
            "prompt_tokens": sum(s.prompt_tokens for s in samples),
            "tokens_per_s": round(tokens / wall, 1),
            "latency_p50_s": round(pct([s.latency_s for s in samples], 50), 2),
            "latency_p95_s": round(pct([s.latency_s for s in samples], 95), 2),
            "ttft_p50_ms": round(pct([s.ttft_s for s in samples], 50) * 1000),
            "ttft_p95_ms": round(pct([s.ttft_s for s in samples], 95) * 1000),
        }
        print(row, flush=True)
        rows.append(row)
    return rows


URGENT_ROOMS = ("kitchen", "hallway", "bathroom", "bedroom", "garage", "office")
URGENT_SERIAL = itertools.count(1)


def urgent(rid: str, i: int) -> GenerationRequest:
    """A short command, different each time: no urgent request finds its whole prompt
    cached by an earlier one (idle or loaded), only the chat template."""
    room, n = URGENT_ROOMS[i % len(URGENT_ROOMS)], next(URGENT_SERIAL)
    return GenerationRequest(rid, (("user", f"Turn on {room} light {n}, please."),), 16)


async def clients_row(sch: TaskScheduler, pool: list[GenerationRequest], n: int) -> Row:
    """`n` clients, each sending its next prompt as soon as its reply is in (no rounds:
    the batch stays full until the last client's share runs out), 16 requests in all."""

    async def client(k: int) -> list[Sample]:
        share = [salted(pool[i], f"k{n}") for i in range(k, len(pool), n)]
        return [await measure(sch, q) for q in share]

    started = time.perf_counter()
    samples = [s for part in await asyncio.gather(*(client(k) for k in range(n))) for s in part]
    wall = time.perf_counter() - started
    tokens = sum(s.tokens for s in samples)
    row: Row = {
        "clients": n,
        "requests": len(samples),
        "tokens": tokens,
        "tokens_per_s": round(tokens / wall, 1),
        "ttft_p50_ms": round(pct([s.ttft_s for s in samples], 50) * 1000),
    }
    print(row, flush=True)
    return row


async def priority_case(
    sch: TaskScheduler, pool: list[GenerationRequest]
) -> tuple[float, dict[str, object]]:
    """TTFT of a short priority-10 request: idle, and arriving behind 16 queued ordinary ones
    once the running ones are all decoding (three arrivals, each with the queue still full
    or nearly so)."""
    tag = f"x{sch.reserved_slots}"
    idle = [(await measure(sch, urgent(f"idle{i}{tag}", i), 10)).ttft_s for i in range(3)]
    requests = [
        renamed(pool[i % len(pool)], f"bg{i}{tag}")
        for i in range(sch.max_batch - sch.reserved_slots + 16)
    ]
    background = [sch.submit_task(Flight(r.id, r)) for r in requests]
    decoding: set[str] = set()

    async def watch(handle: Flight) -> None:
        async for event in handle.events():
            if isinstance(event, Delta):
                decoding.add(handle.id)

    watchers = [asyncio.create_task(watch(h)) for h in background]
    while not all(h.id in decoding for h in background if h.dispatched_at is not None):
        await asyncio.sleep(0.01)
    loaded, depths = [], []
    for i in range(3):
        depths.append(sch.stats().queue_depth)
        loaded.append((await measure(sch, urgent(f"loaded{i}{tag}", 3 + i), 10)).ttft_s)
        await asyncio.sleep(0.2)
    for handle in background:
        sch.cancel_task(handle)
    await asyncio.gather(*watchers)
    idle_ttft, loaded_ttft = statistics.median(idle), statistics.median(loaded)
    ratio = round(loaded_ttft / idle_ttft, 2)  # median loaded / median idle
    return ratio, {
        "ratio": ratio,
        "idle_ttft_ms": round(idle_ttft * 1000),
        "loaded_ttft_ms": [round(t * 1000) for t in loaded],
        "queue_depth_at_arrival": depths,
    }


def decode_profile(engine: Engine) -> dict[str, float]:
    """Where the time goes, in this process: one decode step at batch 1-8 (no prefill in
    the step), and prefill speed on a ~220-token prompt."""
    no_eos = Engine(engine.decoder, engine.tokenizer, engine.chat, frozenset(), CONTEXT_TOKENS, "p")
    profile: dict[str, float] = {}
    for n in (1, 2, 4, 8):
        batch = Batch(no_eos, 8)
        for i in range(n):
            batch.add(GenerationRequest(f"p{i}", (("user", f"Tell me story {i}"),), 200))
        while batch.pending:
            batch.step()
        steps = []
        for _ in range(30):
            started = time.perf_counter()
            batch.step()
            steps.append(time.perf_counter() - started)
        step = statistics.median(steps[5:])
        profile[f"decode_step_ms_batch{n}"] = round(step * 1000, 1)
        profile[f"decode_tok_s_batch{n}"] = round(n / step, 1)
    ids = engine.prompt_ids((("user", "word " * 190),))
    started = time.perf_counter()
    engine.decoder.prefill(ids)
    profile["prefill_tok_s"] = round(len(ids) / (time.perf_counter() - started), 1)
    return profile


def engine_lone(engine: Engine, request: GenerationRequest) -> float:
    """Wall seconds of one request through Engine + Batch in this process."""
    batch = Batch(engine, 8)
    started = time.perf_counter()
    batch.add(request)
    while batch.busy:
        batch.step()
    return time.perf_counter() - started


async def run(args: argparse.Namespace) -> tuple[list[Row], dict[str, object]]:
    spec = StartSpec(
        model_path=str(args.model),
        threads=args.threads,
        context_tokens=CONTEXT_TOKENS,
        max_batch=args.max_batch,
        kv_budget_bytes=1 << 30,
    )
    engine = Engine.from_model(ModelInstance.load(args.model, threads=args.threads), CONTEXT_TOKENS)
    config = SchedulerConfig(queue_size=64, request_timeout_s=600)
    sup = Supervisor(spec)
    await sup.start()
    pool = prompts(16)
    lone = pool[3]  # the longest prompt
    try:
        # Pure batching first: every slot open to every request.
        plain = TaskScheduler(sup, config, args.max_batch, reserved_slots=0)
        await plain.start()
        rows = await concurrency_rows(plain, pool, CONCURRENCY)
        # Decode-bound: the same without the context paragraphs (prefill ~4x smaller).
        short_rows = await concurrency_rows(plain, prompts(16, with_context=False), (1, 8))
        clients8 = await clients_row(plain, pool, 8)
        _, priority_plain = await priority_case(plain, pool)
        print("no reserved slot:", priority_plain, flush=True)
        # Lone request: scheduler + worker and the bare engine in turns, to share the noise.
        via_scheduler, bare = [], []
        for i in range(args.runs + 1):
            via_scheduler.append((await measure(plain, renamed(lone, f"s{i}"))).latency_s)
            bare.append(engine_lone(engine, renamed(lone, f"e{i}")))
        await plain.stop()
        # As the service runs it: one slot kept for priority > 0.
        default = TaskScheduler(sup, config, args.max_batch)
        await default.start()
        ratio, priority = await priority_case(default, pool)
        print(f"{default.reserved_slots} reserved slot(s):", priority, flush=True)
        reserved_rows = await concurrency_rows(default, pool, (8,))
        await default.stop()
    finally:
        await sup.stop()
    profile = decode_profile(engine)
    print(profile, flush=True)
    single = rows[0]["tokens_per_s"]
    at8 = next(r for r in rows if r["concurrency"] == 8)["tokens_per_s"]
    speedup = at8 / single
    lone_s, lone_e = statistics.median(via_scheduler[1:]), statistics.median(bare[1:])
    overhead = lone_s / lone_e - 1
    return rows, {
        "speedup_at_8": round(speedup, 2),
        "speedup_target_met": speedup >= TARGET_SPEEDUP_AT_8,
        "short_prompt_rows": short_rows,
        "short_prompt_speedup_at_8": round(
            short_rows[1]["tokens_per_s"] / short_rows[0]["tokens_per_s"], 2
        ),
        "lone_scheduler_s": round(lone_s, 3),
        "lone_engine_s": round(lone_e, 3),
        "lone_runs": {"scheduler": via_scheduler, "engine": bare},
        "lone_overhead": round(overhead, 4),
        "lone_target_met": abs(overhead) <= TARGET_OVERHEAD,
        "priority_no_reserved_slot": priority_plain,
        "priority_reserved_slot": priority,
        "priority_target_met": ratio <= TARGET_PRIORITY_TTFT,
        "reserved_slot_row_at_8": reserved_rows[0],
        "clients_8": clients8,
        "clients_8_vs_1": round(clients8["tokens_per_s"] / single, 2),
        "engine_profile": profile,
    }


def machine(commit: str | None) -> dict[str, str]:
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    model = next((ln.split(":", 1)[1].strip() for ln in cpu.splitlines() if "Model name" in ln), "")
    if commit is None:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
    return {"cpu": model, "python": platform.python_version(), "commit": commit}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="scheduler throughput and latency")
    parser.add_argument("--model", type=Path, default=default_models_dir() / DEFAULT_MODEL)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=7, help="lone-request repetitions")
    parser.add_argument("--commit", default=None, help="default: git rev-parse HEAD")
    parser.add_argument("--json", type=Path, default=HERE / "out" / "scheduler.json")
    args = parser.parse_args(argv)
    rows, report = asyncio.run(run(args))
    report.update(
        machine=machine(args.commit), max_batch=args.max_batch, threads=args.threads, rows=rows
    )

    print()
    print("| concurrent | requests | tokens | tokens/s | latency p50 / p95 s | TTFT p50 / p95 ms |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['concurrency']} | {r['requests']} | {r['tokens']} | {r['tokens_per_s']} | "
            f"{r['latency_p50_s']} / {r['latency_p95_s']} | "
            f"{r['ttft_p50_ms']} / {r['ttft_p95_ms']} |"
        )
    print()
    for key, value in report.items():
        if key not in ("rows", "lone_runs", "short_prompt_rows"):
            print(f"{key}: {value}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
