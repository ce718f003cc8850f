"""Run the built add-on image the way the Supervisor does, and check it end to end.

    .venv/bin/python -m tests.image.check_image IMAGE     (scripts/image-test.sh runs it)

The image is the project's real Dockerfile built on the stand-in base (tests/image/base:
Debian's s6 with a small /init and a stand-in bashio). Around it, real and double:
- a private Mosquitto with a password, as the broker add-on has (real);
- a Supervisor API double (tests/supervisor_double.py) serving `/services/mqtt` and
  `/addons/self/options/config`, reached through SUPERVISOR_API (read by bashio) and
  EDGE_ASSISTANT_SUPERVISOR_URL (the service's test-only override);
- /data (read-write, with options.json) and /share (read-only, `map: share:ro`).
Two runs: the default options, then options changed in the double (which also rewrites
options.json, as the Supervisor does, and recreates the container).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from assistant.convert.prepare import prepare_model
from assistant.sandbox.report import LAYERS, SandboxReport
from tests.mqtt_helpers import Client, Received
from tests.supervisor_double import SupervisorDouble, serving
from tests.test_model_tiny_gguf import write_tiny_gguf

REPO = Path(__file__).resolve().parents[2]
TOKEN = f"supervisor-token-{uuid.uuid4().hex[:8]}"
BROKER_USER, BROKER_PASSWORD = "addons", f"broker-{uuid.uuid4().hex[:8]}"
BASE = "edge_assistant"
START_S = 240.0  # service start with the model load, on a loaded 2-core machine
REPLY_S = 120.0
STOP_TIMEOUT_S = 30  # addon/config.yaml `timeout`
TINY_GGUF = "Tiny-Chat.Q8_0.gguf"


def say(message: str) -> None:
    print(f"image-test: {message}", flush=True)


def podman(
    *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: {done.returncode}\n{done.stderr}")
    return done


def host_address() -> str:
    """The address containers on podman's bridge reach this machine at (no packet sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # TEST-NET-1: only picks the outgoing interface
        return str(probe.getsockname()[0])


@contextmanager
def mosquitto(workdir: Path, host: str) -> Iterator[int]:
    """A private broker on `host`, password required (like the Mosquitto add-on)."""
    passwords = workdir / "passwords"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(passwords), BROKER_USER, BROKER_PASSWORD],
        check=True,
        capture_output=True,
    )
    # Started as root, Mosquitto drops to its own user before it reads the file and logs.
    passwords.chmod(0o600)
    for path in (workdir.parent, workdir):
        path.chmod(0o755)
    with contextlib.suppress(LookupError):
        shutil.chown(passwords, user="mosquitto")
        shutil.chown(workdir, user="mosquitto")
    with socket.socket() as sock:
        sock.bind((host, 0))
        port = int(sock.getsockname()[1])
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        f"listener {port} {host}\nallow_anonymous false\npassword_file {passwords}\n"
        f"persistence false\nlog_dest file {workdir / 'mosquitto.log'}\n"
    )
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    process = subprocess.Popen([binary, "-c", str(conf)])
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection((host, port), timeout=0.5).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("mosquitto did not start") from None
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(10)


@dataclass
class Addon:
    """One add-on container, created the way the Supervisor creates it."""

    image: str
    data: Path
    share: Path
    supervisor: SupervisorDouble
    name: str = f"edge-assistant-image-test-{uuid.uuid4().hex[:8]}"

    def start(self) -> None:
        podman("rm", "--force", "--ignore", self.name)
        podman(
            "run", "--detach", "--name", self.name,
            "--stop-timeout", str(STOP_TIMEOUT_S),
            "--env", f"SUPERVISOR_TOKEN={TOKEN}",
            "--env", f"SUPERVISOR_API={self.supervisor.url}",
            "--env", f"EDGE_ASSISTANT_SUPERVISOR_URL={self.supervisor.url}",
            "--env", "TZ=UTC",
            "--volume", f"{self.data}:/data",
            "--volume", f"{self.share}:/share:ro",
            self.image,
        )  # fmt: skip

    def logs(self) -> str:
        done = podman("logs", self.name, check=False)
        return done.stdout + done.stderr

    def exec(self, script: str) -> str:
        return podman("exec", self.name, "bash", "-c", script).stdout

    def pids(self, needle: str) -> list[int]:
        """Container PIDs whose command line contains `needle` (no ps in the image)."""
        out = self.exec(
            "for p in /proc/[0-9]*; do "
            '[ "${p#/proc/}" = "$$" ] && continue; '
            "c=$(tr '\\0' ' ' < $p/cmdline 2>/dev/null) || continue; "
            f'case "$c" in *"{needle}"*) echo "${{p#/proc/}}";; esac; done'
        )
        return [int(line) for line in out.split()]

    def wait_exit(self) -> int:
        return int(podman("wait", self.name, timeout=STOP_TIMEOUT_S + 30).stdout.split()[0])

    def remove(self) -> None:
        podman("rm", "--force", "--ignore", self.name, check=False)


def ask(client: Client, text: str, **fields: Any) -> dict[str, Any]:
    request_id = uuid.uuid4().hex[:12]
    client.publish(f"{BASE}/ask", {"id": request_id, "text": text, **fields})

    def mine(message: Received) -> bool:
        if message.topic != f"{BASE}/reply":
            return False
        body = message.json()
        return isinstance(body, dict) and body.get("id") == request_id

    reply: dict[str, Any] = client.wait_for(mine, timeout=REPLY_S)[0].json()
    assert "error" not in reply, reply
    assert reply["finish_reason"] in {"stop", "length"}, reply
    assert reply["usage"]["completion_tokens"] >= 1, reply
    return reply


def is_status(value: str) -> Any:
    return lambda m: m.topic == f"{BASE}/status" and m.payload == value.encode()


def wait_online(client: Client) -> dict[str, Any]:
    """Status online and the info with the worker's sandbox report; returns the info."""
    client.wait_for(is_status("online"), timeout=START_S)

    def full_info(message: Received) -> bool:
        return message.topic == f"{BASE}/info" and message.json().get("sandbox") is not None

    info: dict[str, Any] = client.wait_for(full_info, timeout=START_S)[-1].json()
    return info


def wait_healthy(addon: Addon) -> str:
    """`podman healthcheck run` until healthy: the heartbeat is first written on connect."""
    deadline = time.monotonic() + 60
    while True:
        done = podman("healthcheck", "run", addon.name, check=False)
        if done.returncode == 0:
            return done.stdout.strip() or "healthy"
        if time.monotonic() > deadline:
            raise AssertionError(f"health check never healthy: {done.stdout}{done.stderr}")
        time.sleep(1)


def check_http(addon: Addon) -> None:
    """The Ollama-compatible API on port 11434 (`http.enabled` is on by default), from
    outside the container as Home Assistant reaches it over the add-on network."""
    address = podman(
        "inspect", "--format", "{{.NetworkSettings.IPAddress}}", addon.name
    ).stdout.strip()
    with urllib.request.urlopen(f"http://{address}:11434/api/tags", timeout=30) as answer:
        tags = json.loads(answer.read())
    names = [model["name"] for model in tags["models"]]
    assert names, tags
    body = json.dumps({
        "model": names[0], "stream": False, "options": {"temperature": 0, "num_predict": 8},
        "messages": [{"role": "user", "content": "Say hello to the kitchen."}],
    }).encode()  # fmt: skip
    request = urllib.request.Request(
        f"http://{address}:11434/api/chat", body, {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=REPLY_S) as answer:
        chat = json.loads(answer.read())
    assert chat["done"] is True and chat["message"]["role"] == "assistant", chat
    say(f"the HTTP API answers on {address}:11434 (/api/tags: {names}, /api/chat done)")


def check_sandbox(addon: Addon, info: dict[str, Any]) -> None:
    report = SandboxReport.from_payload(info["sandbox"])
    states = {name: str(report.status(name)) for name in LAYERS}
    say(f"worker sandbox in the container: {json.dumps(states)}")
    for name in LAYERS:
        assert report.is_active(name), f"sandbox layer {name}: {states[name]}"
    # The worker process itself: another uid than root, no_new_privs, a seccomp filter.
    (worker,) = addon.pids("assistant.worker")
    status = addon.exec(f"cat /proc/{worker}/status")
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    assert fields["Uid"].split()[0] == "65534", fields["Uid"]
    assert fields["NoNewPrivs"].strip() == "1", fields["NoNewPrivs"]
    assert fields["Seccomp"].strip() == "2", fields["Seccomp"]  # 2: filter mode


def default_options() -> dict[str, Any]:
    manifest = yaml.safe_load((REPO / "addon" / "config.yaml").read_text())
    options: dict[str, Any] = manifest["options"]
    return options


def run_defaults(addon: Addon, client: Client) -> None:
    """The default options: answers, healthy, sandboxed, and a clean stop."""
    addon.start()
    info = wait_online(client)
    say(f"online; model {info['model']}, tier {info['tier']}")
    assert "/addons/self/options/config" in addon.supervisor.paths_asked()  # bashio
    assert "/services/mqtt" in addon.supervisor.paths_asked()  # the service
    reply = ask(client, "Say hello to the kitchen.", max_tokens=16, temperature=0)
    say(f"a prompt over MQTT got a reply ({reply['usage']['completion_tokens']} tokens)")
    say(f"health check: {wait_healthy(addon)}")
    check_http(addon)
    check_sandbox(addon, info)
    say("the worker's sandbox layers are active (uid 65534, no_new_privs, seccomp)")
    client.clear()
    stop = podman("stop", "--time", str(STOP_TIMEOUT_S), addon.name, timeout=STOP_TIMEOUT_S + 30)
    assert stop.returncode == 0, stop.stderr
    code = addon.wait_exit()
    assert code == 0, f"podman stop: the container exited with {code}"
    client.wait_for(is_status("offline"))
    say("podman stop: exit code 0 and 'offline' on the status topic")


def run_changed_options(addon: Addon, client: Client) -> None:
    """Options changed in the double: bashio and the service honour them; a user's model
    folder in /share is used; a crash ends the container with a non-zero code."""
    options = default_options()
    options["engine"].update(temperature=0.25, max_tokens=5)
    options["model"]["precision"] = "fp32"
    addon.supervisor.write_options(options, addon.data)
    # What a user without the converter in the image does: a folder prepared on a
    # computer (the tiny random model, fp32) and, beside it, a GGUF the image cannot use.
    models = addon.share / "edge_assistant" / "models"
    models.mkdir(parents=True, exist_ok=True)
    write_tiny_gguf(models / TINY_GGUF)
    prepared = prepare_model(models, models / TINY_GGUF, "fp32")
    subprocess.run(["chmod", "-R", "a+rX", str(addon.share)], check=True)  # as Samba leaves it
    asked_before = len(addon.supervisor.paths_asked())
    client.clear()
    addon.start()
    info = wait_online(client)
    assert "/addons/self/options/config" in addon.supervisor.paths_asked()[asked_before:]
    engine = info["config"]["engine"]
    assert (engine["temperature"], engine["max_tokens"]) == (0.25, 5), engine
    assert (info["model"], info["plan"]["precision"]) == (prepared.name, "fp32"), info["plan"]
    reply = ask(client, "Tell me a long story about a lighthouse.", max_tokens=64)
    assert reply["usage"]["completion_tokens"] <= 5, reply
    say(
        f"options from the double in effect: engine.temperature 0.25, engine.max_tokens 5,"
        f" model.precision fp32 (model {info['model']} from /share)"
    )
    # model.precision reaches the run script only through bashio (the Supervisor API).
    warning = f"Not preparing /share/edge_assistant/models/{TINY_GGUF} (fp32)"
    assert warning in addon.logs(), "the run script did not read model.precision via bashio"
    say("model.precision fp32 read by bashio from the double (the GGUF how-to says fp32)")
    (service,) = addon.pids("edge-assistant serve")
    client.clear()
    addon.exec(f"kill -KILL {service}")
    code = addon.wait_exit()
    assert code == 128 + 9, f"a killed service: the container exited with {code}"
    client.wait_for(is_status("offline"))  # the broker sends the last will
    say(f"a killed service stops the container with code {code} and 'offline' (last will)")


def check_no_converter(image: str) -> None:
    """The runtime venv leaves the converter (the `prepare` extra) and pip out."""
    script = (
        "import importlib.util as u, sys; "
        "sys.exit(any(u.find_spec(m) for m in ('gguf', 'onnx', 'onnx_ir', 'sympy', 'pip')))"
    )
    done = podman(
        "run", "--rm", "--entrypoint", "/opt/venv/bin/python", image, "-c", script,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, "the runtime venv has the converter or pip"
    say("the runtime venv has no converter (gguf, onnx, onnx-ir, sympy) and no pip")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("image")
    image = parser.parse_args().image
    check_no_converter(image)
    host = host_address()
    with tempfile.TemporaryDirectory(prefix="edge-assistant-image-") as tmp:
        work = Path(tmp)
        for folder in ("data", "share", "broker"):
            (work / folder).mkdir()
        with mosquitto(work / "broker", host) as port:
            double = SupervisorDouble(
                token=TOKEN,
                broker={
                    "host": host, "port": port, "ssl": False, "protocol": "3.1.1",
                    "username": BROKER_USER, "password": BROKER_PASSWORD,
                },
            )  # fmt: skip
            double.write_options(default_options(), work / "data")
            with serving(double, host):
                addon = Addon(image, work / "data", work / "share", double)
                client = Client(host, port, username=BROKER_USER, password=BROKER_PASSWORD)
                client.subscribe(f"{BASE}/#")
                try:
                    run_defaults(addon, client)
                    run_changed_options(addon, client)
                except BaseException:
                    print(addon.logs()[-6000:], file=sys.stderr)
                    raise
                finally:
                    client.close()
                    addon.remove()
    say("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
