"""The anchor row of the home evaluation: llama.cpp (llama-cpp-python) on the GGUF our
default model is converted from, greedy, on the same cases and the same prompt text.

    PYTHONPATH=. .venv-bench/bin/python benchmarks/home_eval/anchor_llamacpp.py

(.venv-bench: benchmarks/requirements.txt with the package itself.) Each prompt is the
exact text our service renders for the case's HA body (evalprompts.py: the server's body
parser, the core's `generation_request` with HA's tools in the system turn, our prepared
model's chat template), tokenized with the GGUF's own tokenizer (special tokens parsed,
no BOS added, as ours).
Two modes, both greedy (temperature 0, no repetition penalty), up to 256 new tokens (our
default max_tokens), stopping at the end-of-turn token:

- `gbnf`: under a GBNF grammar allowing text or one call, each call naming one of HA's
  tools with arguments that match that tool's schema (gbnf.py). The model alone chooses
  between text and a call, the tool and every argument: no decision step, no grounding in
  the Static Context. The difference to our row is exactly those two.
- `free`: no grammar; a call is whatever `<tool_call>` block the model writes (read by our
  own parser, core/tool_calls.py), everything else is text.

Replies are judged by evalcases.judge and evalcases.well_formed, as ours are. Timings are
in-process (no HTTP): first token and total, p50. llama_cpp is never a runtime dependency.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import llama_cpp.llama_cpp as llama_c
from evalcases import KINDS, Call, Case, judge, load_cases, tools, well_formed
from evalprompts import rendered_prompts
from gbnf import call_grammar
from llama_cpp import Llama, LlamaGrammar

from assistant.core.request import Tool
from assistant.core.tool_calls import parse_tool_calls
from assistant.model.manager import ModelInstance
from assistant.model.paths import default_models_dir

REPO = Path(__file__).resolve().parents[2]
MODEL = "smollm2-135m-instruct-int8"  # ours, converted from GGUF below
OUT = REPO / "benchmarks" / "out" / "home_eval_anchor.json"
GGUF = Path.home() / ".cache" / "edge-assistant" / "downloads" / "SmolLM2-135M-Instruct.Q4_1.gguf"
MAX_TOKENS = 256


def no_repacking() -> None:
    """Load weights without llama.cpp's extra buffer types (weight repacking, AMX): a
    native build on a CPU that reports AMX runs AMX tile instructions, which kill the
    process (SIGILL) where the kernel does not grant them (this machine's sandbox). The
    plain AVX-512 kernels remain."""
    default = llama_c.llama_model_default_params

    def params() -> Any:
        value = default()
        value.use_extra_bufts = False
        return value

    llama_c.llama_model_default_params = params


def generate(llm: Llama, prompt: str, grammar: LlamaGrammar | None) -> tuple[str, float, float]:
    """(text, first token ms, total ms) of a greedy reply."""
    tokens = llm.tokenize(prompt.encode(), add_bos=False, special=True)
    started = time.perf_counter()
    first = 0.0
    text = ""
    stream = llm.create_completion(
        tokens,
        max_tokens=MAX_TOKENS,
        temperature=0.0,
        repeat_penalty=1.0,
        grammar=grammar,
        stream=True,
    )
    for chunk in stream:
        first = first or time.perf_counter() - started
        text += chunk["choices"][0]["text"]
    return text, first * 1000, (time.perf_counter() - started) * 1000


def read_calls(text: str, offered: list[Tool]) -> tuple[str, list[Call]]:
    rest, calls = parse_tool_calls(text, offered)
    return rest, [(c.name, c.arguments) for c in calls]


def run_mode(llm: Llama, mode: str, cases: list[Case], prompts: list[str]) -> dict[str, Any]:
    offered = [
        Tool(t["function"]["name"], t["function"]["description"], t["function"]["parameters"])
        for t in tools()
    ]
    grammar = (
        LlamaGrammar.from_string(call_grammar(tools()), verbose=False) if mode == "gbnf" else None
    )
    kinds = dict.fromkeys(c.kind for c in cases)
    per: dict[str, dict[str, list[Any]]] = {
        k: {"ok": [], "wf": [], "first": [], "total": []} for k in kinds
    }
    misses = []
    for case, prompt in zip(cases, prompts, strict=True):
        raw, first, total = generate(llm, prompt, grammar)
        text, calls = read_calls(raw, offered)
        entry = per[case.kind]
        entry["ok"].append(judge(case, text, calls))
        entry["wf"].append(well_formed(calls))
        entry["first"].append(first)
        entry["total"].append(total)
        if not entry["ok"][-1]:
            misses.append(f"[{case.kind}] {case.sentence!r}: {(calls or raw[:80])!r}")
    return {"per": per, "misses": misses}


def print_mode(mode: str, results: dict[str, Any]) -> None:
    print(f"\nllama.cpp greedy, {mode}:")
    print("| category | n | correct | well-formed calls | first token p50 ms | total p50 ms |")
    print("|---|---|---|---|---|---|")
    for kind, e in results["per"].items():
        n = len(e["ok"])
        print(
            f"| {kind} | {n} | {sum(e['ok'])}/{n} ({100 * sum(e['ok']) / n:.0f}%) "
            f"| {sum(e['wf'])}/{n} | {statistics.median(e['first']):.0f} "
            f"| {statistics.median(e['total']):.0f} |"
        )
    for miss in results["misses"]:
        print(f"  miss {miss}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--modes", default="gbnf,free")
    parser.add_argument("--kinds", default=",".join(KINDS), help="e.g. general")
    args = parser.parse_args()
    cases = [c for c in load_cases() if c.kind in args.kinds.split(",")]
    ours = ModelInstance.load(default_models_dir() / MODEL, threads=1)
    prompts, _ = rendered_prompts(ours, cases)
    del ours
    no_repacking()
    llm = Llama(str(GGUF), n_ctx=8192, n_threads=args.threads, n_batch=512, verbose=False)
    generate(llm, prompts[0], None)  # the first call pays a one-time start-up (seconds)
    out: dict[str, Any] = {"gguf": GGUF.name, "nproc": os.cpu_count()}
    for mode in args.modes.split(","):
        out[mode] = run_mode(llm, mode, cases, prompts)
        print_mode(mode, out[mode])
        OUT.write_text(json.dumps(out, indent=1))  # each mode as soon as it is measured


if __name__ == "__main__":
    main()
