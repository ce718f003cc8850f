"""Which sampling settings and system prompt should be the defaults: the project's QA
prompts (data/qa.tsv, judged by qa_judge.py) on the real default model, in-process, each
prompt rendered as the service renders a `text` request (assistant.core.prompt).

    .venv/bin/python benchmarks/defaults_sweep.py [--max-tokens 128] [--seeds 5] [--stages 3]

The whole grid (temperature {0, 0.2, 0.4, 0.7} x top_p {0.9, 1.0} x repetition penalty
{1.0, 1.1, 1.2} x 3 system prompts, five seeds when sampled) is ~270 runs of 44 prompts,
over an hour on 2 cores, so it is measured in stages, each keeping the best of the last:
  1. system prompts, greedy and at temperature 0.7 (top_p 1, no penalty);
  2. temperature x repetition penalty at the best system prompt (top_p 1);
  3. top_p 0.9 against 1.0 at the two best sampled settings of stage 2, and top_k 40 at
     the best (a cost question: sampling the whole 49k vocabulary sorts it every token).
Replies are capped at 128 tokens (the service's cap is 256): a right answer to these
prompts is far shorter, and a reply that runs to the cap is counted ("capped %").
"Best" is the share of good replies (right, English, not a loop), then fewer degenerate
ones. Greedy (temperature 0) ignores top_p and seeds: one run. Every stage's requests go
into one continuous batch, so the engine decodes many rows at once.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, astuple, dataclass, replace
from pathlib import Path

from qa_judge import QaRow, Verdict, is_english, judge, load_qa

from assistant.config import EngineConfig
from assistant.core.events import Finished, GenerationResult
from assistant.core.prompt import generation_request
from assistant.core.request import Request, Sampling
from assistant.engine.batch import Batch
from assistant.engine.engine import Engine
from assistant.model.manager import ModelInstance
from assistant.model.paths import default_models_dir

HERE = Path(__file__).resolve().parent
PREVIOUS_SYSTEM = "You are a helpful home assistant."
SYSTEMS = {
    "previous": PREVIOUS_SYSTEM,
    "brief": PREVIOUS_SYSTEM + " Answer in one or two short sentences.",
    "brief-en": PREVIOUS_SYSTEM + " Answer in English, in one or two short sentences.",
}
TEMPERATURES = (0.0, 0.2, 0.4, 0.7)
PENALTIES = (1.0, 1.1, 1.2)
PREVIOUS = ("previous", 0.7, 1.0, 1.0, 0)  # the defaults before this sweep: the peer row


@dataclass(frozen=True)
class Setting:
    system: str  # a key of SYSTEMS
    temperature: float
    top_p: float = 1.0
    penalty: float = 1.0
    top_k: int = 0


@dataclass
class Score:
    setting: Setting
    runs: int
    good: float  # % of all replies: right, English and not degenerate
    correct: float  # % of replies to patterned prompts that match
    english: float
    degenerate: float
    capped: float  # % that ran to max_tokens
    tokens: float  # mean completion tokens
    france: list[str]  # the replies to "What is the capital of France?"


def run_stage(
    engine: Engine, settings: list[Setting], qa: list[QaRow], seeds: int, max_tokens: int
) -> list[Score]:
    """Every (setting, seed, prompt) as one request, all through one continuous batch."""
    config = {
        name: EngineConfig(max_tokens=max_tokens, system_prompt=s) for name, s in SYSTEMS.items()
    }
    batch = Batch(engine, max_batch=16)
    index: dict[str, tuple[Setting, int]] = {}
    for setting in settings:
        for seed in range(1 if setting.temperature == 0 else seeds):
            for i, row in enumerate(qa):
                sampling = Sampling(
                    temperature=setting.temperature,
                    top_p=setting.top_p,
                    repeat_penalty=setting.penalty,
                    top_k=setting.top_k,
                    seed=seed * 1000 + i,
                )
                request = Request(
                    f"r{len(index)}", "mqtt", "sweep", text=row.question, sampling=sampling
                )
                index[request.id] = (setting, i)
                batch.add(generation_request(request, config[setting.system]))
    results: dict[Setting, list[tuple[int, GenerationResult]]] = {s: [] for s in settings}
    while batch.busy:
        for event in batch.step():
            if isinstance(event, Finished) and event.result is not None:
                setting, i = index[event.id]
                results[setting].append((i, event.result))
    return [score(s, results[s], qa, max_tokens) for s in settings]


def score(
    setting: Setting, results: list[tuple[int, GenerationResult]], qa: list[QaRow], max_tokens: int
) -> Score:
    verdicts: list[tuple[QaRow, Verdict]] = [(qa[i], judge(qa[i], r.text)) for i, r in results]
    patterned = [v for row, v in verdicts if not row.open]

    def pct(values: list[bool]) -> float:
        return 100 * sum(values) / len(values)

    return Score(
        setting=setting,
        runs=len(results) // len(qa),
        good=pct([v.good for _, v in verdicts]),
        correct=pct([v.correct for v in patterned]),
        english=pct([v.english for _, v in verdicts]),
        degenerate=pct([v.degenerate for _, v in verdicts]),
        capped=pct([r.usage.completion_tokens >= max_tokens for _, r in results]),
        tokens=statistics.mean(r.usage.completion_tokens for _, r in results),
        france=[r.text for i, r in results if qa[i].question.endswith("capital of France?")],
    )


def best(scores: list[Score]) -> list[Score]:
    return sorted(scores, key=lambda s: (-s.good, s.degenerate, s.tokens))


def print_table(title: str, scores: list[Score]) -> None:
    print(f"\n{title}\n")
    print(
        "| system | T | top_p | top_k | rep. pen. | runs | good % | correct % | English % "
        "| degenerate % | capped % | mean tokens | France in English |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for s in scores:
        t = s.setting
        peer = " (previous defaults)" if astuple(t) == PREVIOUS else ""
        france = sum(is_english(text) for text in s.france)
        print(
            f"| {t.system}{peer} | {t.temperature} | {t.top_p} | {t.top_k} | {t.penalty} "
            f"| {s.runs} | {s.good:.1f} | {s.correct:.1f} | {s.english:.1f} "
            f"| {s.degenerate:.1f} | {s.capped:.1f} | {s.tokens:.0f} | {france}/{len(s.france)} |"
        )
    sys.stdout.flush()


def measure(
    engine: Engine, settings: list[Setting], done: dict[Setting, Score], args: argparse.Namespace
) -> list[Score]:
    """Scores of `settings`, measuring only those not measured in an earlier stage."""
    qa = load_qa()
    todo = [s for s in dict.fromkeys(settings) if s not in done]
    started = time.perf_counter()
    for result in run_stage(engine, todo, qa, args.seeds, args.max_tokens):
        done[result.setting] = result
    print(f"\n({len(todo)} settings measured in {time.perf_counter() - started:.0f} s)")
    return [done[s] for s in dict.fromkeys(settings)]


def sweep(engine: Engine, args: argparse.Namespace) -> dict[Setting, Score]:
    done: dict[Setting, Score] = {}
    stage1 = [Setting(name, t) for name in SYSTEMS for t in (0.0, 0.7)]
    scores = measure(engine, stage1, done, args)
    print_table("Stage 1: system prompts (top_p 1, no repetition penalty)", scores)
    system = max(SYSTEMS, key=lambda name: sum(s.good for s in scores if s.setting.system == name))
    stage2 = [Setting(system, t, 1.0, rp) for t in TEMPERATURES for rp in PENALTIES]
    scores = measure(engine, stage2, done, args)
    print_table(f"Stage 2: temperature x repetition penalty ({system!r}, top_p 1)", scores)
    if args.stages < 3:
        return done
    first, second = [s.setting for s in best(scores) if s.setting.temperature > 0][:2]
    stage3 = [replace(first, top_p=p, top_k=k) for p in (0.9, 1.0) for k in (0, 40)]
    stage3 += [second, replace(second, top_p=0.9)]
    scores = measure(engine, stage3, done, args)
    print_table("Stage 3: top_p and top_k at the two best sampled settings", scores)
    print_table("All settings, best first", best(list(done.values())))
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description="QA figures at candidate default settings")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--stages", type=int, choices=(2, 3), default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=HERE / "out" / "defaults_sweep.json")
    args = parser.parse_args()
    folder = default_models_dir() / "smollm2-135m-instruct-int8"
    engine = Engine.from_model(ModelInstance.load(folder, threads=args.threads), 8192)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    print(
        f"commit {commit}, {platform.processor() or platform.machine()}, "
        f"max_tokens {args.max_tokens}, seeds {args.seeds}, {len(load_qa())} prompts"
    )
    print("systems: " + "; ".join(f"{k}: {v!r}" for k, v in SYSTEMS.items()))
    done = sweep(engine, args)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    rows = [{**asdict(s), "setting": asdict(s.setting)} for s in done.values()]
    args.json.write_text(
        json.dumps({"commit": commit, "systems": SYSTEMS, "scores": rows}, indent=1)
    )
    print(f"\nJSON: {args.json}")


if __name__ == "__main__":
    main()
