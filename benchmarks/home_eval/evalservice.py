"""A real `edge-assistant serve` for the evaluation: a private Mosquitto on a free port and
the service as a subprocess (the sandboxed worker, the HTTP API on another free port),
shipped defaults for everything else. The tests have their own helpers for this
(tests/http_helpers.py); a benchmark does not import the test suite (nor pytest).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

REPO = Path(__file__).resolve().parents[2]
BASE_TOPIC = "edge-eval"
START_S = 180.0  # model load and the worker's start, on a busy 2-core machine


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _process(command: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        process = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def _broker(work: Path) -> Iterator[int]:
    port = free_port()
    conf = work / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    with _process([binary, "-c", str(conf)], work / "mosquitto.log") as process:
        _wait_listening(port, process)
        yield port


def _wait_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    for _ in range(100):  # the broker binds within milliseconds; 10 s at most
        if process.poll() is not None:
            raise RuntimeError(f"mosquitto exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.1):
                return
        except OSError:
            threading.Event().wait(0.1)
    raise RuntimeError("mosquitto did not listen within 10 s")


def _online_watcher(port: int) -> tuple[mqtt.Client, threading.Event]:
    """A client that sets the event when the service announces `online` (retained, sent
    once the model is loaded and the core started)."""
    online = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="edge-eval-watch")

    def on_message(_c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        if message.payload == b"online":
            online.set()

    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.subscribe(f"{BASE_TOPIC}/status")
    client.loop_start()
    return client, online


@contextmanager
def serve(work: Path, model_dir: Path, extra: dict[str, Any] | None = None) -> Iterator[int]:
    """Run the service until the block ends; yields its HTTP port."""
    http_port = free_port()
    config: dict[str, Any] = {
        "mqtt": {"host": "127.0.0.1", "base_topic": BASE_TOPIC, "client_id": "edge-eval"},
        "model": {"dir": str(model_dir.parent), "name": model_dir.name},
        "http": {"enabled": True, "host": "127.0.0.1", "port": http_port},
        "web": {"enabled": False},
        **(extra or {}),
    }
    with _broker(work) as mqtt_port:
        config["mqtt"]["port"] = mqtt_port
        path = work / "config.yaml"
        path.write_text(json.dumps(config))  # JSON is YAML
        client, online = _online_watcher(mqtt_port)
        command = [sys.executable, "-m", "assistant", "serve", "--config", str(path)]
        try:
            with _process(command, work / "service.log") as process:
                if not online.wait(START_S) or process.poll() is not None:
                    log = (work / "service.log").read_text()[-2000:]
                    raise RuntimeError(f"the service did not come online:\n{log}")
                yield http_port
        finally:
            client.loop_stop()
            client.disconnect()
