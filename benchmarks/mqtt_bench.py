"""What MQTT costs on top of the engine, and whether a flood of garbage hurts the service.

    .venv/bin/python benchmarks/mqtt_bench.py [--prompts 200] [--flood 10000] [--flood-rounds 3]
        [--broker-nodelay] [--model DIR]

Starts a private Mosquitto on a free loopback port and `python -m assistant serve` as a
subprocess (sandbox on), then:

1. overhead: `--prompts` sequential prompts (QoS 1, ids); for each, the round trip from
   `publish()` to the final reply arriving, minus the engine's own `timing.total_ms`
   (which already includes the scheduler's queue): p50/p95 of that difference;
2. flood: `--flood` malformed messages (not UTF-8, truncated JSON, lists, wrong types,
   empty text) from one publisher as fast as it can send them at QoS 1; the service's
   and its worker's RSS are sampled every 100 ms; every message must be answered
   (`invalid_request`) and a normal prompt afterwards must still be answered.

The model is the suite's tiny random model (built in a temp dir) unless `--model` names a
prepared model folder. Writes JSON to benchmarks/out/mqtt_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the broker, client and tiny model helpers live in tests/

from tests.conftest import free_port  # noqa: E402
from tests.mqtt_helpers import Client, Received, ServiceProcess  # noqa: E402

OUT = REPO / "benchmarks" / "out" / "mqtt_bench.json"
MALFORMED: tuple[bytes, ...] = (
    b"\xff\xfe\x00 not utf-8",
    b'{"text": ',
    b"[1, 2, 3]",
    b'"a JSON string"',
    b'{"id": "%d", "text": 42}',
    b'{"id": "%d", "text": ""}',
    b'{"id": "%d", "text": "hi", "max_tokens": "many"}',
)


def tiny_model(scratch: Path) -> Path:
    from assistant.convert.prepare import prepare_model  # noqa: PLC0415
    from tests.test_model_tiny_gguf import write_tiny_gguf  # noqa: PLC0415

    source = scratch / "Tiny-Chat.Q8_0.gguf"
    write_tiny_gguf(source)
    (scratch / "models").mkdir()
    return prepare_model(scratch / "models", source, "fp32")


def start_broker(workdir: Path, port: int, *, nodelay: bool) -> subprocess.Popen[bytes]:
    """A private Mosquitto like the test suite's; `nodelay` sets `set_tcp_nodelay true`."""
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "max_queued_messages 20000\n" + ("set_tcp_nodelay true\n" if nodelay else "")
    )
    broker = subprocess.Popen(
        ["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return broker
        except OSError:
            time.sleep(0.05)
    broker.kill()
    raise RuntimeError("mosquitto did not start")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class RssSampler(threading.Thread):
    """Resident memory of the service process and of its worker, every 100 ms."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.service_mb: list[float] = []
        self.worker_mb: list[float] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(0.1):
            try:
                self.service_mb.append(self.process.memory_info().rss / 2**20)
                workers = self.process.children(recursive=True)
                self.worker_mb.append(sum(w.memory_info().rss for w in workers) / 2**20)
            except psutil.NoSuchProcess:
                return


def overhead(client: Client, base: str, prompts: int) -> dict[str, Any]:
    rtt, engine, over = [], [], []
    for i in range(prompts):
        rid = f"o{i}"
        start = time.monotonic()
        client.publish(f"{base}/ask", {"id": rid, "text": "Turn on the light", "max_tokens": 8})
        got = client.wait_for(final_for(rid), timeout=30)[0]
        round_trip = (got.at - start) * 1000
        total = float(got.json()["timing"]["total_ms"])
        rtt.append(round_trip)
        engine.append(total)
        over.append(round_trip - total)
    return {
        "prompts": prompts,
        "round_trip_ms": {"p50": pct(rtt, 0.5), "p95": pct(rtt, 0.95)},
        "engine_total_ms": {"p50": pct(engine, 0.5), "p95": pct(engine, 0.95)},
        "overhead_ms": {
            "p50": pct(over, 0.5),
            "p95": pct(over, 0.95),
            "mean": statistics.fmean(over),
        },
    }


def final_for(rid: str) -> Callable[[Received], bool]:
    """The reply to `rid` (cheap: checks the start of the payload, not the JSON)."""
    head = b'{"id": "' + rid.encode() + b'"'
    return lambda m: m.payload.startswith(head)


def flood(client: Client, base: str, n: int, service_pid: int, tag: str) -> dict[str, Any]:
    sampler = RssSampler(service_pid)
    sampler.start()
    time.sleep(0.5)
    client.clear()
    started = time.monotonic()
    last = None
    for i in range(n):
        template = MALFORMED[i % len(MALFORMED)]
        payload = template % i if b"%d" in template else template
        last = client.publish(f"{base}/ask", payload, wait=False)
    assert last is not None
    last.wait_for_publish(120)
    sent_s = time.monotonic() - started
    deadline = time.monotonic() + 120
    replies: list[Received] = []
    while time.monotonic() < deadline:
        replies = client.messages(f"{base}/reply")
        if len(replies) >= n:
            break
        time.sleep(0.1)
    answered_s = time.monotonic() - started
    time.sleep(1.0)
    sampler.halt.set()
    sampler.join()
    codes = Counter(
        r.json()["error"]["code"] if "error" in r.json() else "reply"
        for r in client.messages(f"{base}/reply")
    )
    client.publish(f"{base}/ask", {"id": f"after-{tag}", "text": "still there?"})
    after = client.wait_for(final_for(f"after-{tag}"), timeout=30)[0].json()
    return {
        "messages": n,
        "publish_s": round(sent_s, 2),
        "publish_per_s": round(n / sent_s),
        "all_answered_s": round(answered_s, 2),
        "answers": sum(codes.values()),
        "codes": dict(codes),
        "service_alive": psutil.pid_exists(service_pid),
        "answers_after_flood": "text" in after,
        "service_rss_mb": _summary(sampler.service_mb),
        "worker_rss_mb": _summary(sampler.worker_mb),
    }


def _summary(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {}
    return {
        "start": round(samples[0], 1),
        "max": round(max(samples), 1),
        "end": round(samples[-1], 1),
    }


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="MQTT overhead and malformed-flood benchmark")
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--flood", type=int, default=10_000)
    parser.add_argument("--model", type=Path, default=None, help="default: the tiny model")
    parser.add_argument("--flood-rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, default=OUT)
    parser.add_argument(
        "--broker-nodelay",
        action="store_true",
        help="set_tcp_nodelay true in the broker (Mosquitto's default is false)",
    )
    args = parser.parse_args(argv)
    load_at_start = os.getloadavg()

    with tempfile.TemporaryDirectory(prefix="edge-mqtt-bench-") as tmp:
        scratch = Path(tmp)
        model = args.model or tiny_model(scratch)
        port = free_port()
        (scratch / "broker").mkdir()
        broker = start_broker(scratch / "broker", port, nodelay=args.broker_nodelay)
        service = ServiceProcess(
            scratch / "svc",
            port,
            model,
            config={"telemetry": {"interval_s": 30}, "engine": {"max_tokens": 8}},
        )
        client = Client("127.0.0.1", port)
        try:
            client.subscribe(f"{service.base}/reply/#", f"{service.base}/status", retained=False)
            service.start()
            service.wait_online(client, timeout=60)
            for i in range(10):  # warm-up: first runs allocate the KV cache, JIT paths
                client.publish(f"{service.base}/ask", {"id": f"w{i}", "text": "hi"})
                client.wait_for(final_for(f"w{i}"), timeout=30)
            client.clear()
            result_overhead = overhead(client, service.base, args.prompts)
            # Several rounds: memory that keeps growing round after round would be a leak.
            rounds = [
                flood(client, service.base, args.flood, service.pid, str(r))
                for r in range(args.flood_rounds)
            ]
            result_flood = rounds[0]
            service.signal(signal.SIGTERM)
            exit_code = service.wait(30)
        finally:
            client.close()
            service.stop()
            broker.terminate()
            broker.wait(10)
        result = {
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "nproc": os.cpu_count(),
            "cpu": cpu_model(),
            "load_avg_at_start": load_at_start,
            "model": model.name,
            "broker_tcp_nodelay": args.broker_nodelay,
            "mosquitto": subprocess.run(
                ["mosquitto", "-h"], capture_output=True, text=True, check=False
            ).stdout.splitlines()[0],
            "overhead": result_overhead,
            "flood": result_flood,
            "flood_rounds": rounds,
            "exit_code_after_sigterm": exit_code,
        }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    ok = exit_code == 0 and all(
        f["answers"] == args.flood and f["service_alive"] and f["answers_after_flood"]
        for f in rounds
    )
    return 0 if ok else 1


def print_table(r: dict[str, Any]) -> None:
    o, f = r["overhead"], r["flood"]
    print(f"{r['date']}  nproc={r['nproc']}  {r['cpu']}  model={r['model']}")
    print(f"| sequential prompts ({o['prompts']}) | p50 ms | p95 ms |")
    print("|---|---|---|")
    for key, name in (
        ("round_trip_ms", "round trip (publish → final reply)"),
        ("engine_total_ms", "engine timing.total_ms"),
        ("overhead_ms", "MQTT overhead (difference)"),
    ):
        print(f"| {name} | {o[key]['p50']:.2f} | {o[key]['p95']:.2f} |")
    print()
    print(f"| flood of {f['messages']:,} malformed messages | value |")
    print("|---|---|")
    print(f"| published in | {f['publish_s']} s ({f['publish_per_s']:,}/s) |")
    print(f"| all answered after | {f['all_answered_s']} s |")
    print(f"| answers | {f['answers']:,} {f['codes']} |")
    print(
        f"| service RSS start / max / end | {f['service_rss_mb'].get('start')} / "
        f"{f['service_rss_mb'].get('max')} / {f['service_rss_mb'].get('end')} MB |"
    )
    print(
        f"| worker RSS start / max / end | {f['worker_rss_mb'].get('start')} / "
        f"{f['worker_rss_mb'].get('max')} / {f['worker_rss_mb'].get('end')} MB |"
    )
    print(f"| alive, answers afterwards | {f['service_alive']}, {f['answers_after_flood']} |")
    for n, rf in enumerate(r["flood_rounds"]):
        rss, ans = rf["service_rss_mb"], rf["answers"]
        print(
            f"| round {n + 1}: answers, service RSS start / max / end | {ans:,}, "
            f"{rss.get('start')} / {rss.get('max')} / {rss.get('end')} MB |"
        )
    print(f"| exit code after SIGTERM | {r['exit_code_after_sigterm']} |")


if __name__ == "__main__":
    raise SystemExit(main())
