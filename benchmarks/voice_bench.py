"""How soon a voice pipeline can start speaking: time to the first sentence chunk of a
`"stream": "sentences"` request versus time to the full reply, on the real model.

    .venv/bin/python benchmarks/voice_bench.py [--rounds 3] [--max-tokens 256] [--model DIR]

Starts a private Mosquitto (`set_tcp_nodelay true`) on a free loopback port and
`python -m assistant serve` (sandbox on, hardware plan as on this machine) with the real
default model, then asks typical spoken questions one at a time, greedy (temperature 0,
so every round generates the same text), each `--rounds` times after one warm-up, and
measures on the client from `publish()`: the first `{reply}/stream` chunk (a whole
sentence, what a TTS engine could start speaking) and the final reply. Writes JSON to
benchmarks/out/voice_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the broker and client helpers live in tests/

from tests.conftest import DEFAULT_MODEL_ID, free_port  # noqa: E402
from tests.mqtt_helpers import Client, ServiceProcess, final_for, unique  # noqa: E402

OUT = REPO / "benchmarks" / "out" / "voice_bench.json"
QUESTIONS = (
    "What is a good way to keep the living room warm in winter?",
    "How long should I boil an egg for a soft yolk?",
    "Can you suggest a quick dinner with pasta and tomatoes?",
    "Why do my houseplants get yellow leaves?",
    "What should I check before going on a week-long holiday?",
)


def start_broker(workdir: Path, port: int) -> subprocess.Popen[bytes]:
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "set_tcp_nodelay true\n"
    )
    broker = subprocess.Popen(
        ["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    time.sleep(0.3)
    if broker.poll() is not None:
        raise SystemExit(f"mosquitto exited with {broker.returncode}")
    return broker


def ask_once(client: Client, base: str, question: str, max_tokens: int) -> dict[str, Any]:
    rid = unique("v")
    topic = f"{base}/reply/{rid}"
    started = time.monotonic()
    client.publish(
        f"{base}/ask",
        {
            "id": rid,
            "text": question,
            "stream": "sentences",
            "temperature": 0,
            "max_tokens": max_tokens,
            "reply_to": topic,
        },
        wait=False,
    )
    final = client.wait_for(final_for(rid), timeout=300)[0]
    chunks = client.messages(f"{topic}/stream")
    body = final.json()
    if "error" in body:
        raise SystemExit(f"request failed: {body['error']}")
    first = chunks[0] if chunks else final
    return {
        "first_sentence_ms": round((first.at - started) * 1000, 1),
        "full_reply_ms": round((final.at - started) * 1000, 1),
        "engine_first_token_ms": body["timing"]["first_token_ms"],
        "sentences": len(chunks),
        "completion_tokens": body["usage"]["completion_tokens"],
        "prompt_tokens": body["usage"]["prompt_tokens"],
        "finish_reason": body["finish_reason"],
        "first_sentence": first.json()["delta"] if chunks else body["text"],
    }


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="time to first sentence vs full reply")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--model", type=Path, default=None, help="a prepared model folder")
    parser.add_argument("--json", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if args.model is None:
        from assistant.model.paths import default_models_dir  # noqa: PLC0415

        args.model = default_models_dir() / DEFAULT_MODEL_ID
    if not (args.model / "manifest.json").is_file():
        raise SystemExit(f"{args.model}: no prepared model (run `edge-assistant model prepare`)")

    with tempfile.TemporaryDirectory(prefix="voice-bench-") as scratch:
        work = Path(scratch)
        port = free_port()
        broker = start_broker(work, port)
        service = ServiceProcess(
            work,
            port,
            args.model,
            config={"engine": {"max_tokens": args.max_tokens}, "telemetry": {"interval_s": 30}},
        )
        client = Client("127.0.0.1", port)
        try:
            client.subscribe(f"{service.base}/status", f"{service.base}/reply/#", retained=False)
            service.start()
            service.wait_online(client, timeout=120)
            runs: dict[str, list[dict[str, Any]]] = {}
            for question in QUESTIONS:
                ask_once(client, service.base, question, args.max_tokens)  # warm-up
                runs[question] = [
                    ask_once(client, service.base, question, args.max_tokens)
                    for _ in range(args.rounds)
                ]
                client.clear()
        finally:
            client.close()
            service.stop()
            broker.terminate()
            broker.wait(10)
    report = summarize(runs, args)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print_table(report)
    return 0


def summarize(runs: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> dict[str, Any]:
    per_question = []
    for question, samples in runs.items():
        first = statistics.median(s["first_sentence_ms"] for s in samples)
        full = statistics.median(s["full_reply_ms"] for s in samples)
        per_question.append(
            {
                "question": question,
                "first_sentence_ms": first,
                "full_reply_ms": full,
                "speaks_after_share": round(first / full, 3),
                "sentences": samples[0]["sentences"],
                "completion_tokens": samples[0]["completion_tokens"],
                "finish_reason": samples[0]["finish_reason"],
                "first_sentence": samples[0]["first_sentence"],
                "samples": samples,
            }
        )
    return {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "load_at_end": os.getloadavg(),
        "model": args.model.name,
        "rounds": args.rounds,
        "max_tokens": args.max_tokens,
        "median_first_sentence_ms": statistics.median(q["first_sentence_ms"] for q in per_question),
        "median_full_reply_ms": statistics.median(q["full_reply_ms"] for q in per_question),
        "questions": per_question,
    }


def print_table(report: dict[str, Any]) -> None:
    print(f"{report['model']}, {report['nproc']} cores, {report['cpu']}, {report['date']}")
    print("| question | first sentence ms | full reply ms | share | sentences | tokens |")
    print("|---|---|---|---|---|---|")
    for q in report["questions"]:
        print(
            f"| {q['question']} | {q['first_sentence_ms']:.0f} | {q['full_reply_ms']:.0f} | "
            f"{q['speaks_after_share']:.0%} | {q['sentences']} | {q['completion_tokens']} |"
        )
    print(
        f"median: first sentence {report['median_first_sentence_ms']:.0f} ms, "
        f"full reply {report['median_full_reply_ms']:.0f} ms"
    )
    for q in report["questions"]:
        print(f"  first sentence: {q['first_sentence']!r}")


if __name__ == "__main__":
    raise SystemExit(main())
