"""What the HTTP API costs on top of the engine, and how fast a Home Assistant-sized
request starts, cold and with its prefix cached.

    .venv/bin/python benchmarks/http_bench.py [--requests 50] [--rounds 5] [--model DIR]

Starts a private Mosquitto and `python -m assistant serve` (sandbox on, HTTP on a free
port, the real default model unless `--model`), then:

1. overhead: `--requests` sequential streamed requests on each of `/api/chat` (NDJSON) and
   `/v1/chat/completions` (SSE); for each, the client's round trip (request sent → last
   byte) minus the engine's own total time as the reply reports it (Ollama's
   `total_duration`, OpenAI's `timings.total_ms`; both count from the core accepting the
   request, queue included): p50/p95, and as a share of the engine time (the peer);
2. time to first token for the request Home Assistant 2025.4 sends (tests/data/ha_requests),
   its Static Context grown with more entities to ~2k prompt tokens: `--rounds` times,
   a cold request (a first line that differs from the last request's, so no prefix is
   shared) and then the same conversation's next request (the assistant's tool call and
   the tool's result appended: it shares the whole ~2k-token prefix). Measured at the
   client (request sent → first NDJSON line) and by the engine (first_token_ms).

Writes JSON to benchmarks/out/http_bench.json and prints a table.
"""

from __future__ import annotations

import argparse
import copy
import http.client
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the broker and service helpers live in tests/

from tests.conftest import free_port, start_mosquitto  # noqa: E402
from tests.mqtt_helpers import Client, ServiceProcess  # noqa: E402

OUT = REPO / "benchmarks" / "out" / "http_bench.json"
HA_BODIES = REPO / "tests" / "data" / "ha_requests"
ALIAS = "edge-assistant:latest"
TARGET_TOKENS = 2_000


def post_stream(port: int, path: str, body: dict[str, Any]) -> tuple[float, float, bytes]:
    """(seconds to the first body line, seconds to the last byte, the body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    data = json.dumps(body).encode()
    started = time.perf_counter()
    conn.request("POST", path, body=data, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    first = response.readline()
    first_at = time.perf_counter() - started
    rest = response.read()
    total = time.perf_counter() - started
    conn.close()
    if response.status != 200:
        raise RuntimeError(f"{path}: {response.status} {first!r}")
    return first_at, total, first + rest


def engine_ms_ollama(body: bytes) -> tuple[float, float]:
    """(total ms, first-token ms) from the last NDJSON line."""
    last = json.loads(body.splitlines()[-1])
    total = last["total_duration"] / 1e6
    return total, total - last["eval_duration"] / 1e6


def engine_ms_openai(body: bytes) -> float:
    events = [line[6:] for line in body.decode().splitlines() if line.startswith("data: {")]
    for event in reversed(events):
        chunk = json.loads(event)
        if "timings" in chunk:
            return float(chunk["timings"]["total_ms"])
    raise RuntimeError("no timings in the stream")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict[str, float]:
    return {"p50": round(pct(values, 0.5), 2), "p95": round(pct(values, 0.95), 2)}


def overhead(port: int, n: int) -> dict[str, Any]:
    messages = [{"role": "user", "content": "Name three colours."}]
    ollama = {"model": ALIAS, "messages": messages, "options": {"num_predict": 16}}
    oai = {"model": ALIAS, "messages": messages, "max_tokens": 16, "stream": True}
    results: dict[str, Any] = {}
    for name, path, body in (
        ("/api/chat", "/api/chat", ollama),
        ("/v1/chat/completions", "/v1/chat/completions", oai),
    ):
        post_stream(port, path, body)  # warm-up
        extra, engine = [], []
        for _ in range(n):
            _, total, raw = post_stream(port, path, body)
            ms = engine_ms_ollama(raw)[0] if path == "/api/chat" else engine_ms_openai(raw)
            extra.append(total * 1000 - ms)
            engine.append(ms)
        results[name] = {
            "overhead_ms": summary(extra),
            "engine_ms": summary(engine),
            "overhead_share_p50": round(pct(extra, 0.5) / pct(engine, 0.5), 4),
        }
    return results


def grown_request(port: int) -> tuple[dict[str, Any], int]:
    """HA's first request with its entity list grown until the prompt is ~2k tokens."""
    base = json.loads((HA_BODIES / "ollama_chat_first_turn_ha2025.4.4.json").read_text())
    base |= {"model": ALIAS, "options": {"num_ctx": 8192.0, "num_predict": 1}}
    system = base["messages"][0]["content"]
    rooms = ("Kitchen", "Hall", "Bedroom", "Office", "Garage", "Garden", "Attic", "Porch")
    kinds = (("Light", "light"), ("Blinds", "cover"), ("Heater", "climate"), ("Fan", "fan"))
    entities = [
        f"- names: {room} {label} {i}\n  domain: {domain}\n  state: 'off'\n  areas: {room}\n"
        for i in range(40)
        for room in rooms
        for label, domain in kinds
    ]
    count, tokens = 0, 0
    while tokens < TARGET_TOKENS and count < len(entities):
        count += 8
        body = copy.deepcopy(base)
        body["messages"][0]["content"] = system + "".join(entities[:count])
        _, _, raw = post_stream(port, "/api/chat", body)
        tokens = json.loads(raw.splitlines()[-1])["prompt_eval_count"]
    return body, tokens


def next_turn(body: dict[str, Any]) -> dict[str, Any]:
    follow = copy.deepcopy(body)
    call = {"function": {"name": "HassTurnOn", "arguments": {"name": "Kitchen Light"}}}
    result = {"response_type": "action_done", "data": {"success": [{"name": "Kitchen Light"}]}}
    follow["messages"] += [
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "content": json.dumps(result)},
    ]
    return follow


def first_token(port: int, rounds: int) -> dict[str, Any]:
    body, tokens = grown_request(port)
    body["options"]["num_predict"] = 8
    cold: list[tuple[float, float]] = []
    warm: list[tuple[float, float]] = []
    for i in range(rounds):
        fresh = copy.deepcopy(body)
        # A different first line (HA 2025.4 puts the time there): nothing is shared.
        fresh["messages"][0]["content"] = (
            f"Current time is 17:{i:02d}:00.\n" + (fresh["messages"][0]["content"])
        )
        for runs, request in ((cold, fresh), (warm, next_turn(fresh))):
            first_at, _, raw = post_stream(port, "/api/chat", request)
            runs.append((first_at * 1000, engine_ms_ollama(raw)[1]))
    return {
        "prompt_tokens": tokens,
        "cold": {
            "client_ms": summary([c for c, _ in cold]),
            "engine_ms": summary([e for _, e in cold]),
        },
        "shared_prefix": {
            "client_ms": summary([c for c, _ in warm]),
            "engine_ms": summary([e for _, e in warm]),
        },
        "speedup_p50": round(pct([c for c, _ in cold], 0.5) / pct([c for c, _ in warm], 0.5), 1),
    }


def cpu_model() -> str:
    for line in subprocess.run(
        ["lscpu"], capture_output=True, text=True, check=False
    ).stdout.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--model", type=Path, default=None)
    args = parser.parse_args(argv)
    from assistant.model.paths import default_models_dir  # noqa: PLC0415

    model = args.model or default_models_dir() / "smollm2-135m-instruct-int8"
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        broker_port, http_port = free_port(), free_port()
        broker = start_mosquitto(work, broker_port)  # returns once it listens
        service = ServiceProcess(
            work,
            broker_port,
            model,
            config={
                "http": {"enabled": True, "host": "127.0.0.1", "port": http_port},
                "engine": {"temperature": 0, "max_tokens": 64, "context_tokens": "auto"},
                "telemetry": {"interval_s": 30},
            },
        )
        watcher = None
        try:
            watcher = Client("127.0.0.1", broker_port)
            watcher.subscribe(f"{service.base}/status", retained=False)
            service.start()
            service.wait_online(watcher, timeout=120)
            results = {
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "commit": subprocess.run(
                    ["git", "rev-parse", "--short", "HEAD"],
                    capture_output=True,
                    text=True,
                    cwd=REPO,
                    check=False,
                ).stdout.strip(),
                "machine": {"nproc": len(os.sched_getaffinity(0)), "cpu": cpu_model()},
                "model": model.name,
                "overhead": overhead(http_port, args.requests),
                "first_token": first_token(http_port, args.rounds),
            }
        finally:
            service.stop()
            if watcher is not None:
                watcher.close()
            broker.terminate()
            broker.wait(10)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
