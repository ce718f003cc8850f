"""The pytest side of the real Home Assistant: starts tests/ha/driver.py with the Python
of Home Assistant's venv and sends it steps (see steps.py for what each step does).

The venv is built by scripts/ha-venv.sh (scripts/setup.sh runs it). A missing venv
fails the test, naming the script: the real-HA tests never skip.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port
from tests.mqtt_helpers import REPO

HA_VERSION = "2025.4.4"
DEFAULT_VENV = Path.home() / ".cache" / "edge-assistant" / f"ha-venv-{HA_VERSION}"
START_TIMEOUT_S = 240.0  # a core's first start on a loaded 2-core machine
STEP_TIMEOUT_S = 90.0


def ha_python() -> Path:
    """The Python of Home Assistant's venv; a test failure naming the script if missing."""
    venv = Path(os.environ.get("EDGE_ASSISTANT_HA_VENV", str(DEFAULT_VENV)))
    python = venv / "bin" / "python"
    if not python.exists() or not (venv / ".edge-assistant-stamp").exists():
        pytest.fail(
            f"Home Assistant's venv {venv} is missing or incomplete: "
            "run `bash scripts/ha-venv.sh` (scripts/setup.sh runs it)"
        )
    return python


def base_config(http_port: int) -> dict[str, Any]:
    """configuration.yaml of a headless core: its own HTTP port on loopback, the API the
    steps use, Assist, and English as the language."""
    return {
        "homeassistant": {
            "name": "Edge Assistant tests",
            "latitude": 52.37,
            "longitude": 4.89,
            "elevation": 0,
            "unit_system": "metric",
            "time_zone": "UTC",
            "currency": "EUR",
            "country": "NL",
            "language": "en",
        },
        "logger": {"default": "info"},
        "http": {"server_host": ["127.0.0.1"], "server_port": http_port},
        "api": {},
        "websocket_api": {},
        "config": {},
        "conversation": {},
        "intent": {},
        "assist_pipeline": {},
    }


class StepFailedError(AssertionError):
    """Home Assistant could not do a step; the message says why."""


class HomeAssistant:
    """One real core in a driver subprocess; `call` runs a step and returns its result."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.config_dir = workdir / "config"
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.driver_log = workdir / "driver.log"
        self.process: subprocess.Popen[str] | None = None
        self._replies: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._next_id = 0
        self.version = ""

    def start(self, config: dict[str, Any]) -> HomeAssistant:
        log = self.driver_log.open("a")
        self.process = subprocess.Popen(
            [str(ha_python()), "-m", "tests.ha.driver", str(self.config_dir)],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        log.close()
        threading.Thread(target=self._read, daemon=True).start()
        started = self.call("start", timeout_s=START_TIMEOUT_S, config=config)
        self.version = started["version"]
        return self

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self._replies.put(json.loads(line))
        self._replies.put(None)

    def call(self, step: str, timeout_s: float = STEP_TIMEOUT_S, **args: Any) -> Any:
        assert self.process is not None and self.process.stdin is not None
        self._next_id += 1
        command = {"id": self._next_id, "step": step, "args": args}
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        try:
            reply = self._replies.get(timeout=timeout_s)
        except queue.Empty:
            raise StepFailedError(
                f"step {step} got no answer in {timeout_s} s{self._tail()}"
            ) from None
        if reply is None:
            raise StepFailedError(f"the Home Assistant driver exited during {step}{self._tail()}")
        assert reply["id"] == self._next_id, reply
        if not reply["ok"]:
            raise StepFailedError(f"step {step} failed: {reply['error']}")
        return reply["result"]

    def _tail(self) -> str:
        text = self.driver_log.read_text(errors="replace") if self.driver_log.exists() else ""
        return "; driver log:\n" + "\n".join(text.splitlines()[-30:])

    def log_text(self) -> str:
        path = self.config_dir / "home-assistant.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            with contextlib.suppress(StepFailedError, OSError):
                self.call("stop", timeout_s=60)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()

    # --- named steps (see steps.py) -------------------------------------------------

    def add_mqtt(self, host: str, port: int) -> dict[str, Any]:
        return dict(self.call("add_mqtt", host=host, port=port))

    def add_wyoming(self, host: str, port: int) -> dict[str, Any]:
        return dict(self.call("add_wyoming", host=host, port=port))

    def add_ollama(self, url: str, model: str, llm_hass_api: str | None = "assist") -> Any:
        return self.call("add_ollama", url=url, model=model, llm_hass_api=llm_hass_api)

    def converse(self, text: str, **kwargs: Any) -> dict[str, Any]:
        """kwargs: agent_id, conversation_id, language."""
        return dict(self.call("converse", text=text, **kwargs))

    def state(self, entity_id: str) -> dict[str, Any] | None:
        result = self.call("state", entity_id=entity_id)
        return None if result is None else dict(result)

    def wait_state(self, entity_id: str, timeout_s: float = 15.0, **kwargs: Any) -> dict[str, Any]:
        """kwargs: state= (wait until it is) or not_state= (until it is not)."""
        result = self.call("wait_state", timeout_s=timeout_s + 5, entity_id=entity_id, **kwargs)
        return dict(result)

    def devices(self, domain: str) -> list[dict[str, Any]]:
        return list(self.call("devices", domain=domain))

    def warnings(self, since: int = 0) -> tuple[list[dict[str, Any]], int]:
        """Home Assistant's warnings and errors from index `since`, and the next index."""
        result = self.call("log", since=since)
        return list(result["records"]), int(result["next"])

    def ws(self, message: dict[str, Any], until_event: str | None = None) -> dict[str, Any]:
        return dict(self.call("ws", message=message, until_event=until_event))

    def http(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        return dict(self.call("http", method=method, path=path, body=body))

    def call_service(self, domain: str, service: str, **data: Any) -> None:
        self.call("call_service", domain=domain, service=service, data=data)


@contextlib.contextmanager
def home_assistant(workdir: Path, extra: dict[str, Any] | None = None) -> Iterator[HomeAssistant]:
    """A started core with `base_config` (plus `extra` top-level keys); stopped after."""
    ha = HomeAssistant(workdir)
    try:
        ha.start({**base_config(free_port()), **(extra or {})})
        yield ha
    finally:
        ha.stop()
