"""Scale benchmark: our engine on a GGUF prepared with `model prepare --precision auto` against
llama.cpp on the same GGUF, same run, for the files scale_models.py writes (0.5B-1.5B).

For each model and type: prepare (timed; skipped when the folder is up to date), then per
round one process per engine. Each process loads the model, warms up (4 tokens), then
generates `--new-tokens` greedy tokens after the short (~30 tokens) and the long (~270
tokens) ChatML prompt of engine_bench.py, each from a fresh sequence (no prefix reuse), and
reports its peak RSS. Decode tok/s is from the short prompt, prompt tok/s from the long one.
Also printed: the plan's decode estimate (plan_speed.py) from the prepared folder's streamed
weight bytes, and the bytes per token llama.cpp reads (its tensors minus the embedding
table, plus the tied head).

    .venv-bench/bin/python benchmarks/scale_bench.py --out /work/cache/scale \
        --models qwen2.5-0.5b --types Q4_K_M --rounds 2

Writes (merges into) benchmarks/out/scale_bench.json. On a VM whose CPU advertises AMX but
traps on tile instructions (llama.cpp built natively then dies with SIGILL), build the shim
`gcc -O2 -shared -fPIC -o noamx.so benchmarks/noamx.c -ldl` and pass `--llama-preload
noamx.so`: llama.cpp then runs its AVX-512 kernels.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from procmem import peak_rss_mb

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Children import nothing else at the top: their peak RSS is the engine's own.

OUT = ROOT / "benchmarks" / "out" / "scale_bench.json"
THREADS = 2
CONTEXT = 2048
WARMUP_TOKENS = 4


def _timed(run: Any, ids: list[int], new_tokens: int) -> dict[str, float]:
    """run(ids, n) -> (t_start, t_first, t_end); prompt and decode speeds from those."""
    start, first, end = run(ids, new_tokens)
    return {
        "prompt_tokens": len(ids),
        "prompt_tok_s": len(ids) / (first - start),
        "decode_tok_s": (new_tokens - 1) / (end - first),
    }


def run_ours(folder: str, prompts: dict[str, list[int]], new_tokens: int) -> dict[str, Any]:
    from assistant.engine.batch import Batch  # noqa: PLC0415
    from assistant.engine.engine import Engine  # noqa: PLC0415
    from assistant.engine.request import GenerationRequest  # noqa: PLC0415
    from assistant.model.manager import ModelManager  # noqa: PLC0415

    model = ModelManager().load_model(folder, threads=THREADS)
    base = Engine.from_model(model, CONTEXT)

    def generate(ids: list[int], n: int) -> tuple[float, float, float]:
        class FixedPrompt(Engine):
            def prompt_ids(self, messages: object) -> list[int]:
                return list(ids)

        # A fresh engine: no prefix kept from the previous sequence. No stop ids: exactly n.
        engine = FixedPrompt(base.decoder, base.tokenizer, base.chat, frozenset(), CONTEXT, "b")
        batch = Batch(engine, 1)
        start = time.perf_counter()
        batch.add(GenerationRequest("bench", (("user", ""),), n))
        while batch.busy and not batch.active:  # the prompt's chunks, then its first token
            batch.step()
        first = time.perf_counter()
        while batch.busy:
            batch.step()
        return start, first, time.perf_counter()

    generate(prompts["short"], WARMUP_TOKENS)
    return {which: _timed(generate, ids, new_tokens) for which, ids in prompts.items()}


def run_llama(gguf: str, prompts: dict[str, list[int]], new_tokens: int) -> dict[str, Any]:
    import llama_cpp  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    llm = llama_cpp.Llama(gguf, n_threads=THREADS, n_ctx=CONTEXT, n_batch=512, verbose=False)

    def next_token() -> int:
        # The context's logits: llama-cpp-python 0.3 leaves Llama.scores at zero without
        # logits_all.
        row = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
        return int(np.ctypeslib.as_array(row, shape=(llm.n_vocab(),)).argmax())

    def generate(ids: list[int], n: int) -> tuple[float, float, float]:
        llm.reset()  # a fresh sequence: eval drops the cache beyond n_tokens = 0
        start = time.perf_counter()
        llm.eval(ids)
        token = next_token()
        first = time.perf_counter()
        for _ in range(n - 1):
            llm.eval([token])
            token = next_token()
        return start, first, time.perf_counter()

    generate(prompts["short"], WARMUP_TOKENS)
    return {which: _timed(generate, ids, new_tokens) for which, ids in prompts.items()}


def child(engine: str, path: str, new_tokens: int) -> None:
    prompts = json.loads(os.environ["BENCH_IDS"])
    runner = run_ours if engine == "ours" else run_llama
    figures = runner(path, prompts, new_tokens)
    figures["peak_rss_mb"] = peak_rss_mb()  # VmHWM: ru_maxrss keeps the parent's peak
    print(json.dumps(figures))


# --- the orchestrator ---------------------------------------------------------------------


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def prepare(gguf: Path, models: Path) -> tuple[Path, float]:
    """`edge-assistant model prepare --gguf FILE --precision auto` into `models`."""
    start = time.perf_counter()
    command = ["-m", "assistant", "model", "prepare", "--gguf", str(gguf), "--precision", "auto"]
    done = subprocess.run(
        [sys.executable, *command],
        env={**_env(), "EDGE_ASSISTANT_MODELS": str(models)},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    return Path(done.stdout.strip().splitlines()[-1]), time.perf_counter() - start


def measure(engine: str, path: Path, ids: Any, args: argparse.Namespace) -> Any:
    command = [
        __file__,
        "--child",
        engine,
        "--path",
        str(path),
        "--new-tokens",
        str(args.new_tokens),
    ]
    env = {**_env(), "BENCH_IDS": json.dumps(ids)}
    if engine == "llama.cpp" and args.llama_preload:
        env["LD_PRELOAD"] = str(args.llama_preload)
    run = subprocess.run(
        [sys.executable, *command],
        stdout=subprocess.PIPE,
        env=env,
        cwd=ROOT,
        text=True,
        check=True,
    )
    return json.loads(run.stdout.strip().splitlines()[-1])


def llama_bytes_per_token(gguf: Path) -> int:
    """Bytes of the tensors llama.cpp reads per decode step: all but the embedding table
    (one row a token), plus the embedding when it is also the (tied) head."""
    from assistant.convert.gguf_loader import open_reader  # noqa: PLC0415

    tensors = {t.name: int(t.n_bytes) for t in open_reader(gguf).tensors}
    total = sum(tensors.values())
    return total if "output.weight" not in tensors else total - tensors["token_embd.weight"]


def estimate(folder: Path) -> dict[str, Any]:
    """The plan's decode estimate for this folder on this machine, and its inputs."""
    from assistant.hardware import Probe  # noqa: PLC0415
    from assistant.models_present import spec_from_manifest  # noqa: PLC0415
    from assistant.plan_speed import decode_tok_s  # noqa: PLC0415

    manifest = json.loads((folder / "manifest.json").read_text())
    spec = spec_from_manifest(manifest, folder)
    facts = Probe().facts(folder)
    return {
        "streamed_mb": spec.decode_bytes / 2**20,
        "folder_mb": spec.file_mb,
        "est_decode_tok_s": decode_tok_s(facts, THREADS, spec.decode_bytes, spec.n_layers),
        "levels": (manifest.get("quantization") or {}).get("accuracy_levels"),
        "groups": (manifest.get("quantization") or {}).get("groups"),
    }


def bench_one(name: str, type_name: str, args: argparse.Namespace, ids: Any) -> dict[str, Any]:
    from scale_models import gguf_path  # noqa: PLC0415

    gguf = gguf_path(args.out, name, type_name)
    folder, prep_s = prepare(gguf, args.out / name / f"models-{type_name}")
    best: dict[str, Any] = {}
    for _ in range(args.rounds):
        for engine, path in (("ours", folder), ("llama.cpp", gguf)):
            got = measure(engine, path, ids, args)
            old = best.get(engine)
            if old is None or got["short"]["decode_tok_s"] > old["short"]["decode_tok_s"]:
                best[engine] = {**got, "long": max(got["long"], (old or got)["long"], key=_pp)}
    return {
        "model": name,
        "type": type_name,
        "prepare_s": prep_s,
        "gguf_mb": gguf.stat().st_size / 2**20,
        "llama_streamed_mb": llama_bytes_per_token(gguf) / 2**20,
        **estimate(folder),
        **best,
    }


def _pp(figures: dict[str, float]) -> float:
    return figures["prompt_tok_s"]


def report(row: dict[str, Any]) -> None:
    ours, peer = row["ours"], row["llama.cpp"]
    print(
        f"{row['model']} {row['type']}: prepare {row['prepare_s']:.0f}s, folder "
        f"{row['folder_mb']:.0f} MB, streams {row['streamed_mb']:.0f} MB/token "
        f"(llama.cpp {row['llama_streamed_mb']:.0f}), levels {row['levels']}"
    )
    for engine, f in (("ours", ours), ("llama.cpp", peer)):
        print(
            f"  {engine:10} decode {f['short']['decode_tok_s']:7.1f} tok/s  prompt "
            f"{f['long']['prompt_tok_s']:7.1f} tok/s ({f['long']['prompt_tokens']} tokens)  "
            f"peak RSS {f['peak_rss_mb']:6.0f} MB"
        )
    print(
        f"  ratios: decode {ours['short']['decode_tok_s'] / peer['short']['decode_tok_s']:.2f}x, "
        f"prompt {ours['long']['prompt_tok_s'] / peer['long']['prompt_tok_s']:.2f}x, "
        f"RSS {ours['peak_rss_mb'] / peer['peak_rss_mb']:.2f}x; plan estimate "
        f"{row['est_decode_tok_s']:.1f} tok/s vs measured {ours['short']['decode_tok_s']:.1f}",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path.home() / ".cache/edge-assistant/scale")
    parser.add_argument("--models", default="qwen2.5-0.5b,llama-3.2-1b,qwen2.5-1.5b")
    parser.add_argument("--types", default="Q4_K_M,Q4_0,Q8_0")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument(
        "--llama-preload",
        type=Path,
        help="LD_PRELOAD for the llama.cpp process: noamx.so (built from benchmarks/noamx.c) "
        "where the CPU advertises AMX that traps",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.path, args.new_tokens)
        return 0
    from engine_bench import machine, prompt_ids  # noqa: PLC0415

    ids = prompt_ids()
    print(
        f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, {machine()}; prompts "
        f"{len(ids['short'])}/{len(ids['long'])} tokens, {args.new_tokens} greedy tokens, "
        f"{THREADS} threads, best of {args.rounds}",
        flush=True,
    )
    saved = json.loads(OUT.read_text()) if OUT.is_file() else {}
    for name in args.models.split(","):
        for type_name in args.types.split(","):
            row = bench_one(name, type_name, args, ids)
            report(row)
            row["date"] = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
            saved[f"{name} {type_name}"] = row
            OUT.parent.mkdir(parents=True, exist_ok=True)
            OUT.write_text(json.dumps(saved, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
