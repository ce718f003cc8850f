"""Where the engine's resident memory goes: /proc/self/smaps by mapping kind, per stage.

Loads a prepared model folder as the worker does (ModelManager, Engine over the plan's
context), then runs engine_bench.py's short and long prompts through a Batch of one, 128
greedy tokens each, and prints after each stage the current and peak RSS (VmRSS, VmHWM)
and the resident MiB of each kind of mapping (anonymous, brk heap, ONNX Runtime's library,
the model's files).

    PYTHONPATH=. .venv/bin/python benchmarks/engine_memory.py smollm2-135m-instruct-int8
    PYTHONPATH=. .venv/bin/python benchmarks/engine_memory.py DIR --context 8192 --json

Run it alone on the machine: the figures are this process's own.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from procmem import peak_rss_mb, rss_mb, smaps_mb

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
NEW_TOKENS = 128
THREADS = 2


def snapshot(stage: str, started: float) -> dict[str, Any]:
    return {
        "stage": stage,
        "s": round(time.perf_counter() - started, 2),
        "rss_mb": round(rss_mb(), 1),
        "peak_mb": round(peak_rss_mb(), 1),
        "kinds": {k: round(v, 1) for k, v in smaps_mb().items() if v >= 0.5},
    }


def run(model_path: str, context: int, started: float) -> list[dict[str, Any]]:
    from engine_bench import LONG, SHORT, SYSTEM  # noqa: PLC0415

    from assistant.engine.batch import Batch  # noqa: PLC0415
    from assistant.engine.engine import Engine  # noqa: PLC0415
    from assistant.engine.request import GenerationRequest  # noqa: PLC0415
    from assistant.model.manager import ModelManager  # noqa: PLC0415

    stages = [snapshot("imports", started)]
    model = ModelManager().load_model(model_path, threads=THREADS)
    stages.append(snapshot("session loaded", started))
    engine = Engine.from_model(model, context)
    stages.append(snapshot("engine (in-place probe)", started))
    batch = Batch(engine, 1)
    for name, text in (("short", SHORT), ("long", LONG)):
        request = GenerationRequest(name, (("system", SYSTEM), ("user", text)), NEW_TOKENS)
        batch.add(request)
        while batch.busy:
            batch.step()
        stages.append(snapshot(f"{name} prompt + {NEW_TOKENS} tokens", started))
    return stages


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a model id in the models dir, or a folder")
    parser.add_argument("--context", type=int, default=8192, help="the plan's context")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    stages = run(args.model, args.context, time.perf_counter())
    if args.json:
        print(json.dumps(stages, indent=2))
        return 0
    for s in stages:
        kinds = ", ".join(f"{k} {v:.0f}" for k, v in s["kinds"].items())
        print(f"{s['stage']:32} rss {s['rss_mb']:6.1f} peak {s['peak_mb']:6.1f} | {kinds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
