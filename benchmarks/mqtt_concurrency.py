"""Aggregate throughput of concurrent MQTT prompts through the whole service, 1 vs 8.

    .venv/bin/python benchmarks/mqtt_concurrency.py [--model DIR] [--levels 1,8]

Starts a private Mosquitto (`set_tcp_nodelay true`) and `python -m assistant serve`
(sandbox on, the real default model, greedy, `engine.max_batch` 8), then publishes the
scheduler bench's 16 prompts (mixed lengths, 64-128 new tokens each, salted per level so no
prompt is cached from, or answered by, an earlier level) in rounds of `n` at once.
tokens/s = completion tokens (from each reply's `usage`) / wall time, publish to last reply.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mqtt_bench import cpu_model, final_for, start_broker  # noqa: E402
from scheduler_bench import DEFAULT_MODEL, prompts, salted  # noqa: E402

from assistant.model.paths import default_models_dir  # noqa: E402
from tests.conftest import free_port  # noqa: E402
from tests.mqtt_helpers import Client, ServiceProcess  # noqa: E402


def level(client: Client, base: str, n: int, tag: str) -> dict[str, Any]:
    pool = prompts(16)
    tokens, latencies = 0, []
    wall = 0.0
    for r in range(max(1, 16 // n)):
        batch = [salted(pool[(r * n + i) % len(pool)], f"{tag}r{r}") for i in range(n)]
        started = time.monotonic()
        for q in batch:
            payload = {"id": q.id, "text": q.messages[0][1], "max_tokens": q.max_tokens}
            client.publish(f"{base}/ask", payload)
        for q in batch:
            got = client.wait_for(final_for(q.id), timeout=600)[0]
            reply = got.json()
            if "usage" not in reply:
                raise RuntimeError(f"{q.id} failed: {reply}")
            tokens += int(reply["usage"]["completion_tokens"])
            latencies.append(got.at - started)
        wall += time.monotonic() - started
    row = {
        "concurrent": n,
        "requests": len(latencies),
        "tokens": tokens,
        "tokens_per_s": round(tokens / wall, 1),
        "latency_max_s": round(max(latencies), 2),
    }
    print(row, flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="concurrent MQTT prompts, real model")
    parser.add_argument("--model", type=Path, default=default_models_dir() / DEFAULT_MODEL)
    parser.add_argument("--levels", default="1,8")
    args = parser.parse_args(argv)
    levels = [int(x) for x in args.levels.split(",")]
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="edge-mqtt-conc-") as tmp:
        scratch = Path(tmp)
        port = free_port()
        (scratch / "broker").mkdir()
        broker = start_broker(scratch / "broker", port, nodelay=True)
        engine = {"max_tokens": 256, "context_tokens": 2048, "max_batch": 8, "temperature": 0}
        service = ServiceProcess(scratch / "svc", port, args.model, config={"engine": engine})
        client = Client("127.0.0.1", port)
        try:
            client.subscribe(f"{service.base}/reply/#", f"{service.base}/status", retained=False)
            service.start()
            service.wait_online(client, timeout=120)
            client.publish(f"{service.base}/ask", {"id": "warm", "text": "hi", "max_tokens": 4})
            client.wait_for(final_for("warm"), timeout=120)
            rows = [level(client, service.base, n, f"m{k}") for k, n in enumerate(levels)]
        finally:
            client.close()
            service.stop()
            broker.terminate()
            broker.wait(10)
    single = rows[0]["tokens_per_s"]
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "load_avg_at_start": load,
        "rows": rows,
        "vs_first": {r["concurrent"]: round(r["tokens_per_s"] / single, 2) for r in rows},
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
