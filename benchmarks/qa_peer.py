"""Greedy answers to the project's QA prompts: our engines against llama.cpp, same run.

    .venv-bench/bin/python benchmarks/qa_peer.py [--engines ours-gguf,ours-int8,llama.cpp]

Every engine gets the same token ids (our chat template, no system prompt) and decodes
greedily (argmax, no penalty) up to 64 tokens or the end of turn; llama.cpp runs the very
GGUF our folders were prepared from. Replies are judged by benchmarks/qa_judge.py. Besides
the counts, `same as llama.cpp` says how many replies are identical to llama.cpp's.
Models come from EDGE_ASSISTANT_MODELS (the folders `smollm2-135m-instruct-<precision>`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from qa_judge import judge, load_qa

if TYPE_CHECKING:
    from assistant.model.manager import ModelInstance

MAX_NEW = 64
THREADS = 2
MODEL = "smollm2-135m-instruct"


Generate = Callable[[list[int]], list[int]]


def ours(precision: str) -> tuple[Generate, ModelInstance, list[int]]:
    """A greedy generator on our decoder for one precision, its model and its stop ids."""
    from assistant.engine.decoder import Decoder  # noqa: PLC0415
    from assistant.model.manager import ModelManager  # noqa: PLC0415
    from assistant.model.paths import default_models_dir  # noqa: PLC0415

    model = ModelManager(default_models_dir()).load_model(f"{MODEL}-{precision}", threads=THREADS)
    decoder = Decoder(model.session)
    stops = set(model.manifest.stop_token_ids)

    def run(ids: list[int]) -> list[int]:
        logits, cache = decoder.prefill(ids)
        out: list[int] = []
        while len(out) < MAX_NEW:
            token = int(np.argmax(logits))
            if token in stops:
                break
            out.append(token)
            step, cache = decoder.step(cache, np.array([token], dtype=np.int64))
            logits = step[0]
        return out

    return run, model, sorted(stops)


def llama(stops: list[int]) -> Generate:
    from engine_bench import llama_logits, open_llama  # noqa: PLC0415

    from assistant.convert.fetch import fetch_default_gguf  # noqa: PLC0415

    llm = open_llama(fetch_default_gguf())

    def run(ids: list[int]) -> list[int]:
        llm.reset()
        llm.eval(ids)
        out: list[int] = []
        while len(out) < MAX_NEW:
            token = int(llama_logits(llm).argmax())
            if token in stops:
                break
            out.append(token)
            llm.eval([token])
        return out

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", default="ours-gguf,ours-int8,llama.cpp")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/out/qa_peer.json"))
    args = parser.parse_args()
    engines = args.engines.split(",")
    rows = load_qa()
    # The prompt ids and the decoding of replies come from our int8 folder's tokenizer
    # (the same vocabulary as the GGUF's).
    first, model, stops = ours("int8")
    runners: dict[str, Generate] = {}
    for engine in engines:
        if engine == "ours-int8":
            runners[engine] = first
        elif engine.startswith("ours-"):
            runners[engine] = ours(engine.removeprefix("ours-"))[0]
        else:
            runners[engine] = llama(stops)
    replies: dict[str, list[str]] = {e: [] for e in engines}
    for row in rows:
        text = model.render_chat([{"role": "user", "content": row.question}])
        ids = list(model.tokenizer.encode(text, add_special_tokens=False).ids)
        for engine, run in runners.items():
            replies[engine].append(model.tokenizer.decode(run(ids)))
    summary = {}
    for engine in engines:
        verdicts = [judge(row, reply) for row, reply in zip(rows, replies[engine], strict=True)]
        summary[engine] = {
            "correct": sum(v.correct for v in verdicts),
            "good": sum(v.good for v in verdicts),
            "same_as_llama": sum(
                a == b for a, b in zip(replies[engine], replies.get("llama.cpp", []), strict=False)
            ),
        }
        print(
            f"{engine:10} correct {summary[engine]['correct']}/{len(rows)}  good (correct, "
            f"English, no loop) {summary[engine]['good']}/{len(rows)}  same as llama.cpp "
            f"{summary[engine]['same_as_llama']}/{len(rows)}"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    record = {"summary": summary, "questions": [r.question for r in rows], "replies": replies}
    args.json.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
