"""Engine benchmark: our INT8 and FP32 engines against llama.cpp and PyTorch, same run.

Every engine runs in its own process (so peak RSS is its own), on the same ChatML prompts
(~30 and ~300 tokens, the same token ids), generating exactly 128 greedy tokens. Rounds
alternate engines so that noise on a shared machine hits all of them alike; the best
round per engine is reported.

    .venv-bench/bin/python benchmarks/engine_bench.py            # all engines, 3 rounds
    .venv-bench/bin/python benchmarks/engine_bench.py --engines ours-int8,llama.cpp

Peers come from benchmarks/requirements.txt. Writes benchmarks/out/engine_bench.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from procmem import peak_rss_mb

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"
NEW_TOKENS = 128
THREADS = 2
SYSTEM = "You are a helpful home assistant."
SHORT = "Which lights should I turn off before going to bed?"
LONG = (
    "Here is the state of my home this evening. The kitchen light is on at full "
    "brightness, the living room has two lamps on at forty percent, the hallway light is "
    "on, the bedroom light is off, the bathroom fan has been running for twenty minutes, "
    "the garage door is closed, the front door is locked but the back door is unlocked, "
    "the thermostat is set to twenty-two degrees while the outside temperature is four "
    "degrees, the dishwasher finished an hour ago, the washing machine is still running "
    "with thirty minutes left, the robot vacuum is docked and charging, the television in "
    "the living room is on standby, the porch light is on, the garden sprinklers are "
    "scheduled for six in the morning, and the kids' bedroom night light is on. The "
    "weather forecast says frost overnight and rain tomorrow afternoon. My partner is "
    "already asleep and I will go to bed in ten minutes. I want to save energy, keep the "
    "house safe and comfortable, and not wake anyone up. I also need to leave for work at "
    "seven thirty tomorrow. Please go through the devices one by one and tell me, for "
    "each, what I should do now, what can wait until morning, and anything I should "
    "schedule, and explain briefly why for each device."
)
ENGINES = ("ours-gguf", "ours-int8", "ours-int8-worker", "ours-fp32", "llama.cpp", "pytorch-fp32")


def models_dir() -> Path:
    from assistant.model.paths import default_models_dir  # noqa: PLC0415

    return default_models_dir()


def prompt_ids() -> dict[str, list[int]]:
    """The token ids every engine is fed, from our tokenizer and chat template."""
    from assistant.model.manager import ModelManager  # noqa: PLC0415

    model = ModelManager(models_dir()).load_model("smollm2-135m-instruct-int8", threads=1)
    out = {}
    for name, text in (("short", SHORT), ("long", LONG)):
        rendered = model.render_chat(
            [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]
        )
        out[name] = list(model.tokenizer.encode(rendered, add_special_tokens=False).ids)
    return out


# --- one engine, in a child process ---------------------------------------------------------


def run_ours(precision: str, ids: list[int]) -> dict[str, float]:
    from assistant.engine.batch import Batch  # noqa: PLC0415
    from assistant.engine.engine import Engine  # noqa: PLC0415
    from assistant.engine.request import GenerationRequest  # noqa: PLC0415
    from assistant.model.manager import ModelManager  # noqa: PLC0415

    model = ModelManager(models_dir()).load_model(
        f"smollm2-135m-instruct-{precision}", threads=THREADS
    )
    base = Engine.from_model(model, 2048)

    class FixedPrompt(Engine):
        def prompt_ids(self, messages: Sequence[tuple[str, str]]) -> list[int]:
            return list(ids)

    # No stop ids: exactly NEW_TOKENS tokens, like the peers.
    engine = FixedPrompt(base.decoder, base.tokenizer, base.chat, frozenset(), 2048, "bench")
    batch = Batch(engine, 1)
    start = time.perf_counter()
    batch.add(GenerationRequest("bench", (("user", ""),), NEW_TOKENS))
    while batch.busy and not batch.active:  # the prompt's chunks, then its first token
        batch.step()
    first = time.perf_counter()
    while batch.busy:
        batch.step()
    end = time.perf_counter()
    return _figures(len(ids), start, first, end, model.manifest.size_bytes())


def run_ours_worker(ids: list[int]) -> dict[str, float]:
    """The engine behind the sandboxed worker (as `ask` and `serve` use it) against the
    same engine in this process, same request, alternating, best of 3 each. Both stop at
    the end of turn, so only their ratio is reported."""
    from assistant.core.events import Finished  # noqa: PLC0415
    from assistant.core.flight import Flight  # noqa: PLC0415
    from assistant.engine.batch import generate  # noqa: PLC0415
    from assistant.engine.engine import Engine  # noqa: PLC0415
    from assistant.engine.request import GenerationRequest  # noqa: PLC0415
    from assistant.model.manager import ModelManager  # noqa: PLC0415
    from assistant.worker.protocol import StartSpec  # noqa: PLC0415
    from assistant.worker.supervisor import Supervisor  # noqa: PLC0415

    folder = models_dir() / "smollm2-135m-instruct-int8"
    text = LONG if len(ids) > 100 else SHORT
    request = GenerationRequest("bench", (("system", SYSTEM), ("user", text)), NEW_TOKENS)
    engine = Engine.from_model(ModelManager().load_model(folder, threads=THREADS), 2048)

    def in_process() -> float:
        for event in generate(engine, request):
            if isinstance(event, Finished) and event.result is not None:
                return event.result.timing.tokens_per_s
        return 0.0

    async def main() -> dict[str, float]:
        sup = Supervisor(StartSpec(str(folder), THREADS, 2048, 1, 256 << 20))
        hello = await sup.start()
        worker, local = [], []
        for _ in range(3):
            local.append(in_process())
            final = None
            flight = Flight(request.id, request)
            sup.send(flight)
            async for event in flight.events():
                final = event
            assert isinstance(final, Finished) and final.result is not None
            worker.append(final.result.timing.tokens_per_s)
        worker_peak = peak_rss_mb(hello.pid)
        await sup.stop()
        return {
            "worker_decode_tok_s": max(worker),
            "inprocess_decode_tok_s": max(local),
            "worker_peak_rss_mb": worker_peak,
        }

    return asyncio.run(main())


def open_llama(path: Path) -> Any:
    """llama.cpp on `path`, 2 threads, without the CPU's "extra buffer types".

    This machine lists AMX among its CPU flags and llama.cpp built with GGML_NATIVE uses
    it for Q4_1 weights, but the VM traps on it: the first eval dies with SIGILL. Without
    extra buffer types (AMX, and weight repacking, which to our reading of ggml has no
    Q4_1 layout; not measured) the AVX-512 kernels run. Set BENCH_LLAMA_EXTRA_BUFTS=1
    where AMX works."""
    import llama_cpp  # noqa: PLC0415

    defaults = llama_cpp.llama_model_default_params

    def params() -> Any:
        out = defaults()
        out.use_extra_bufts = os.environ.get("BENCH_LLAMA_EXTRA_BUFTS") == "1"
        return out

    llama_cpp.llama_model_default_params = params
    llama_cpp.llama.llama_cpp.llama_model_default_params = params
    try:
        return llama_cpp.Llama(str(path), n_threads=THREADS, n_ctx=2048, n_batch=512, verbose=False)
    finally:
        llama_cpp.llama_model_default_params = defaults
        llama_cpp.llama.llama_cpp.llama_model_default_params = defaults


def llama_logits(llm: Any) -> Any:
    """The last evaluated position's logits. llama-cpp-python 0.3 no longer fills
    `Llama.scores` without logits_all (it stays zeros), so they are read from the context."""
    import llama_cpp  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    row = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
    return np.ctypeslib.as_array(row, shape=(llm.n_vocab(),))


def run_llama(ids: list[int]) -> dict[str, float]:
    from assistant.convert.fetch import fetch_default_gguf  # noqa: PLC0415

    gguf = fetch_default_gguf()
    llm = open_llama(gguf)
    start = time.perf_counter()
    llm.eval(ids)
    token = int(llama_logits(llm).argmax())
    first = time.perf_counter()
    for _ in range(NEW_TOKENS - 1):
        llm.eval([token])
        token = int(llama_logits(llm).argmax())
    end = time.perf_counter()
    return _figures(len(ids), start, first, end, gguf.stat().st_size)


def run_torch(ids: list[int]) -> dict[str, float]:
    import torch  # noqa: PLC0415
    from transformers import AutoModelForCausalLM  # noqa: PLC0415

    from assistant.convert.fetch import fetch_default_gguf  # noqa: PLC0415

    torch.set_num_threads(THREADS)
    gguf = fetch_default_gguf()
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, torch_dtype=torch.float32
    )
    model.eval()
    with torch.inference_mode():
        start = time.perf_counter()
        out = model(torch.tensor([ids]), use_cache=True)
        past, token = out.past_key_values, int(out.logits[0, -1].argmax())
        first = time.perf_counter()
        for _ in range(NEW_TOKENS - 1):
            out = model(torch.tensor([[token]]), past_key_values=past, use_cache=True)
            past, token = out.past_key_values, int(out.logits[0, -1].argmax())
        end = time.perf_counter()
    params = sum(p.numel() for p in model.parameters()) * 4
    return _figures(len(ids), start, first, end, params)


def _figures(n_prompt: int, start: float, first: float, end: float, size: int) -> dict[str, float]:
    return {
        "prompt_tokens": n_prompt,
        "ttft_ms": (first - start) * 1000,
        "prompt_tok_s": n_prompt / (first - start),
        "decode_tok_s": (NEW_TOKENS - 1) / (end - first),
        "e2e_ms": (end - start) * 1000,
        "file_mb": size / 2**20,
    }


def child(engine: str, which: str) -> None:
    ids = json.loads(os.environ["BENCH_IDS"])[which]
    runners = {
        "ours-int8": lambda: run_ours("int8", ids),
        "ours-fp32": lambda: run_ours("fp32", ids),
        "ours-gguf": lambda: run_ours("gguf", ids),
        "ours-int8-worker": lambda: run_ours_worker(ids),
        "llama.cpp": lambda: run_llama(ids),
        "pytorch-fp32": lambda: run_torch(ids),
    }
    figures = runners[engine]()
    # This process's own peak (VmHWM): ru_maxrss would keep the orchestrator's, which loads
    # the model for the prompt ids, across fork + exec.
    figures.setdefault("peak_rss_mb", peak_rss_mb())
    print(json.dumps(figures))


# --- the orchestrator ---------------------------------------------------------------------


def measure(engine: str, which: str, ids: dict[str, list[int]]) -> dict[str, float]:
    env = {**os.environ, "BENCH_IDS": json.dumps(ids)}
    run = subprocess.run(
        [sys.executable, __file__, "--child", engine, "--prompt", which],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
        check=False,
    )
    if run.returncode != 0:
        raise RuntimeError(f"{engine} failed with exit code {run.returncode}")
    figures: dict[str, float] = json.loads(run.stdout.strip().splitlines()[-1])
    return figures


def machine() -> dict[str, str]:
    cpu = ""
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    for line in lscpu.splitlines():
        if line.startswith("Model name:"):
            cpu = line.split(":", 1)[1].strip()
    return {"nproc": str(os.cpu_count()), "cpu": cpu, "python": platform.python_version()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--prompt", default="short", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.prompt)
        return 0
    engines = [e for e in args.engines.split(",") if e != "ours-int8-worker"]
    ids = prompt_ids()
    print(
        f"prompts: short {len(ids['short'])} tokens, long {len(ids['long'])} tokens; "
        f"{NEW_TOKENS} greedy tokens; {THREADS} threads; best of {args.rounds} rounds"
    )
    best: dict[tuple[str, str], dict[str, float]] = {}
    for _ in range(args.rounds):
        for which in ("short", "long"):
            for engine in engines:
                figures = measure(engine, which, ids)
                key = (engine, which)
                if key not in best or figures["e2e_ms"] < best[key]["e2e_ms"]:
                    best[key] = figures
    print(
        f"{'engine':14} {'prompt':6} {'prompt tok/s':>12} {'decode tok/s':>12} "
        f"{'TTFT ms':>8} {'e2e ms':>8} {'peak RSS MB':>11} {'file MB':>8}"
    )
    rows: list[dict[str, object]] = []
    for engine in engines:
        for which in ("short", "long"):
            f = best[(engine, which)]
            print(
                f"{engine:14} {which:6} {f['prompt_tok_s']:12.0f} {f['decode_tok_s']:12.1f} "
                f"{f['ttft_ms']:8.0f} {f['e2e_ms']:8.0f} {f['peak_rss_mb']:11.0f} "
                f"{f['file_mb']:8.0f}"
            )
            rows.append({"engine": engine, "prompt": which, **f})
    ratios = _ratios(best, engines)
    if "ours-int8-worker" in args.engines:
        worker = measure("ours-int8-worker", "short", ids)
        print(
            f"sandboxed worker: decode {worker['worker_decode_tok_s']:.1f} tok/s vs "
            f"{worker['inprocess_decode_tok_s']:.1f} in-process; worker peak RSS "
            f"{worker['worker_peak_rss_mb']:.0f} MB"
        )
        ratios["worker decode / in-process decode"] = (
            worker["worker_decode_tok_s"] / worker["inprocess_decode_tok_s"]
        )
        rows.append({"engine": "ours-int8-worker", "prompt": "short", **worker})
    for name, value in ratios.items():
        print(f"{name}: {value:.2f}")
    OUT.mkdir(parents=True, exist_ok=True)
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine(),
        "rows": rows,
        "ratios": ratios,
        "new_tokens": NEW_TOKENS,
        "threads": THREADS,
    }
    (OUT / "engine_bench.json").write_text(json.dumps(report, indent=2))
    return 0


def _ratios(best: dict[tuple[str, str], dict[str, float]], engines: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for ours in ("ours-int8", "ours-gguf"):
        if ours not in engines:
            continue
        tag = "" if ours == "ours-int8" else " [gguf]"
        if "llama.cpp" in engines:
            for which in ("short", "long"):
                out[f"decode vs llama.cpp ({which}){tag}"] = (
                    best[(ours, which)]["decode_tok_s"] / best[("llama.cpp", which)]["decode_tok_s"]
                )
            out[f"prompt vs llama.cpp (long){tag}"] = (
                best[(ours, "long")]["prompt_tok_s"] / best[("llama.cpp", "long")]["prompt_tok_s"]
            )
        if "pytorch-fp32" in engines:
            out[f"e2e speed-up vs PyTorch FP32 (short){tag}"] = (
                best[("pytorch-fp32", "short")]["e2e_ms"] / best[(ours, "short")]["e2e_ms"]
            )
    return out


if __name__ == "__main__":
    raise SystemExit(main())
