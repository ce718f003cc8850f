"""Service footprint: RSS of `edge-assistant serve` once online, and what its entry imports.

Starts a private Mosquitto, runs `python -m assistant serve` with the default config (only
the broker's address given, by environment) from the source tree `--tree`, waits for the
retained `online` on `edge_assistant/status`, then prints the service process's RSS (not
its worker's) and the worker's for comparison. With `--prompts`, it then asks engine_bench.py's
short and long prompts (128 tokens each, one after the other) and prints each process's
current and peak RSS (VmRSS, VmHWM) and their sum. Then counts the modules
`python -X importtime -c "import assistant.cli, assistant.serve"` loads from that tree and
names, for each heavy module the service should not need, the chain that imports it.

    .venv/bin/python benchmarks/service_footprint.py [--tree PATH] [--prompts] [--json]

Pass another checkout (e.g. a `git worktree` of an older commit) as --tree to measure a
peer with this same interpreter, venv and broker.
"""

from __future__ import annotations

import argparse
import json
import operator
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psutil
from engine_bench import LONG, SHORT
from paho.mqtt.enums import CallbackAPIVersion
from procmem import peak_rss_mb, rss_mb

ROOT = Path(__file__).resolve().parents[1]
ENTRY = "import assistant.cli, assistant.serve"
HEAVY = ("numpy", "onnxruntime", "onnx", "tokenizers", "jinja2", "gguf", "aiohttp", "llguidance")
ONLINE_TIMEOUT_S = 300
ASK_TIMEOUT_S = 300


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_broker(workdir: Path, port: int) -> subprocess.Popen[bytes]:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    broker = subprocess.Popen([binary, "-c", str(conf)], stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
        except OSError:
            time.sleep(0.05)
            continue
        return broker
    broker.kill()
    raise SystemExit("mosquitto did not start")


def wait_online(port: int, service: subprocess.Popen[bytes]) -> float:
    """Seconds until the service's retained `online` arrives."""
    online = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="footprint")
    client.on_message = lambda _c, _u, msg: online.set() if msg.payload == b"online" else None
    client.on_connect = lambda c, *_: c.subscribe("edge_assistant/status")
    client.connect("127.0.0.1", port)
    client.loop_start()
    started = time.monotonic()
    try:
        while not online.wait(0.2):
            if service.poll() is not None:
                raise SystemExit(f"the service exited with {service.returncode}")
            if time.monotonic() - started > ONLINE_TIMEOUT_S:
                raise SystemExit("the service did not come online")
    finally:
        client.loop_stop()
        client.disconnect()
    return time.monotonic() - started


def ask(port: int, prompts: dict[str, str]) -> dict[str, int]:
    """Ask each prompt in turn over MQTT (128 tokens); completion tokens per prompt."""
    replies: dict[str, dict[str, Any]] = {}
    arrived = threading.Condition()

    def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        body = json.loads(msg.payload) if not msg.topic.endswith("/stream") else None
        if isinstance(body, dict) and ("finish_reason" in body or "error" in body):
            with arrived:
                replies[str(body.get("id"))] = body
                arrived.notify_all()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="footprint-ask")
    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.subscribe("edge_assistant/reply/#", qos=1)
    client.loop_start()
    try:
        for name, text in prompts.items():
            client.publish(
                "edge_assistant/ask",
                json.dumps({"id": name, "text": text, "max_tokens": 128}),
                qos=1,
            )
            with arrived:
                if not arrived.wait_for(partial(operator.contains, replies, name), ASK_TIMEOUT_S):
                    raise SystemExit(f"no reply to the {name} prompt")
            if "error" in replies[name]:
                raise SystemExit(f"the {name} prompt failed: {replies[name]}")
    finally:
        client.loop_stop()
        client.disconnect()
    return {n: int(r["usage"]["completion_tokens"]) for n, r in replies.items()}


def memory(pids: dict[str, int]) -> dict[str, Any]:
    """VmRSS and VmHWM of each named process, and their sums."""
    rows = {
        n: {"rss_mb": round(rss_mb(p), 1), "peak_mb": round(peak_rss_mb(p), 1)}
        for n, p in pids.items()
    }
    rows["sum"] = {k: round(sum(r[k] for r in rows.values()), 1) for k in ("rss_mb", "peak_mb")}
    return rows


def measure_service(tree: Path, prompts: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        broker = start_broker(Path(tmp), port)
        env = {
            **os.environ,
            "EDGE_ASSISTANT_MQTT_HOST": "127.0.0.1",
            "EDGE_ASSISTANT_MQTT_PORT": str(port),
            "PYTHONPATH": str(tree),
        }
        service = subprocess.Popen(
            [sys.executable, "-m", "assistant", "serve"],
            cwd=tree,  # no config.yaml there: the defaults
            env=env,
            stderr=subprocess.DEVNULL,
        )
        try:
            online_s = wait_online(port, service)
            process = psutil.Process(service.pid)
            workers = process.children()
            report: dict[str, Any] = {
                "online_s": round(online_s, 2),
                "service_rss_mb": round(process.memory_info().rss / 2**20, 1),
                "worker_rss_mb": [round(w.memory_info().rss / 2**20, 1) for w in workers],
            }
            if prompts:
                pids = {"service": service.pid, **{f"worker {w.pid}": w.pid for w in workers}}
                report["online"] = memory(pids)
                report["completion_tokens"] = ask(port, {"short": SHORT, "long": LONG})
                report["after_prompts"] = memory(pids)
            return report
        finally:
            service.terminate()
            service.wait(30)
            broker.terminate()
            broker.wait(10)


def import_report(tree: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", ENTRY],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        check=True,
    )
    rows = [line for line in done.stderr.splitlines() if line.startswith("import time:")]
    entries = [_parse(row) for row in rows[1:]]  # the first row is the header
    return {
        "modules": len(entries),
        "heavy": {name: _chain(entries, name) for name in HEAVY if _first(entries, name) >= 0},
    }


def _parse(row: str) -> tuple[int, str]:
    """(depth, module) from `import time: self | cumulative |   <indent>name`."""
    name_field = row.rsplit("|", 1)[1]
    stripped = name_field.lstrip(" ")
    return (len(name_field) - len(stripped)) // 2, stripped.strip()


def _first(entries: list[tuple[int, str]], name: str) -> int:
    return next((i for i, (_, mod) in enumerate(entries) if mod == name), -1)


def _chain(entries: list[tuple[int, str]], name: str) -> list[str]:
    """Who imported `name`: importtime prints a module after its imports, one level
    shallower, so each importer is the next row with a smaller depth."""
    index = _first(entries, name)
    depth, chain = entries[index][0], [name]
    for row_depth, module in entries[index + 1 :]:
        if row_depth < depth:
            chain.append(module)
            depth = row_depth
    return list(reversed(chain))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tree", type=Path, default=ROOT, help="source tree to measure")
    parser.add_argument("--prompts", action="store_true", help="then ask two prompts")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    tree = args.tree.resolve()
    commit = subprocess.run(
        ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    report = {"tree": str(tree), "commit": commit, **measure_service(tree, args.prompts)}
    report.update(import_report(tree))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"tree {tree} @ {commit}")
    print(f"online after {report['online_s']} s")
    service, workers = report["service_rss_mb"], report["worker_rss_mb"]
    print(f"service RSS {service} MB (target <= 50); worker RSS {workers} MB")
    for stage in ("online", "after_prompts"):
        if stage in report:
            rows = ", ".join(
                f"{n} {r['rss_mb']:.1f} (peak {r['peak_mb']:.1f})" for n, r in report[stage].items()
            )
            print(f"{stage}: RSS MB {rows}")
    if "completion_tokens" in report:
        print(f"completion tokens {report['completion_tokens']}")
    print(f'`python -X importtime -c "{ENTRY}"`: {report["modules"]} modules')
    for name, chain in report["heavy"].items():
        print(f"  {name}: {' -> '.join(chain)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
