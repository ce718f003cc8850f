"""Shared fixtures. The broker is a real Mosquitto started on a free loopback port."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.mqtt_helpers import Client


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    process: subprocess.Popen[bytes]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_mosquitto(workdir: Path, port: int) -> subprocess.Popen[bytes]:
    """Start a private broker that allows anonymous clients on 127.0.0.1:`port`."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).exists():
        # Never skip: CI installs mosquitto, and a skipped broker hides every MQTT test.
        pytest.fail("the mosquitto binary is missing: run scripts/setup.sh (apt-get install)")
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\n"
        "allow_anonymous true\n"
        "persistence false\n"
        "max_queued_messages 10000\n"
        f"log_dest file {workdir / 'mosquitto.log'}\n"
    )
    process = subprocess.Popen(
        [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"mosquitto exited with {process.returncode}; see {workdir}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    pytest.fail("mosquitto did not start listening within 10 s")


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A Mosquitto broker of the test session's own, on a free port."""
    workdir = tmp_path_factory.mktemp("mosquitto")
    port = free_port()
    process = start_mosquitto(workdir, port)
    yield Broker("127.0.0.1", port, process)
    stop_process(process)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """Terminate, then kill if it has not exited within 5 s."""
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A Mosquitto of the module's own: Home Assistant subscribes to the whole discovery
    prefix, so it must not see the retained devices of other modules' tests."""
    workdir = tmp_path_factory.mktemp("own-broker")
    port = free_port()
    process = start_mosquitto(workdir, port)
    yield Broker("127.0.0.1", port, process)
    stop_process(process)


@pytest.fixture(scope="module")
def own_watcher(own_broker: Broker) -> Iterator[Client]:
    """A client on `own_broker` that records what it is told to subscribe to."""
    client = Client(own_broker.host, own_broker.port)
    yield client
    client.close()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama-family model, converted by the real pipeline (FP32 keeps the
    engine tests exact)."""
    from assistant.convert.prepare import prepare_model  # noqa: PLC0415
    from tests.test_model_tiny_gguf import write_tiny_gguf  # noqa: PLC0415

    source = tmp_path_factory.mktemp("tiny-src") / "Tiny-Chat.Q8_0.gguf"
    write_tiny_gguf(source)
    return prepare_model(tmp_path_factory.mktemp("tiny-models"), source, "fp32")


DEFAULT_MODEL_ID = "smollm2-135m-instruct-int8"


@pytest.fixture(scope="session")
def real_model_dir() -> Path:
    """The real default model, prepared by scripts/setup.sh; missing is a failure, not a skip."""
    from assistant.model.paths import default_models_dir  # noqa: PLC0415

    folder = default_models_dir() / DEFAULT_MODEL_ID
    if not (folder / "manifest.json").is_file():
        pytest.fail(f"{folder} is missing: run `edge-assistant model prepare` first")
    return folder
