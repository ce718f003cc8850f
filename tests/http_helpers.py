"""What the HTTP API tests share: the service with its HTTP API on a free port, and a
plain `http.client` caller (the other real clients are ollama, openai and curl)."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import Broker, free_port
from tests.mqtt_helpers import Client, ServiceProcess, running

ALIAS = "edge-assistant:latest"


def http_service(
    workdir: Path, broker: Broker, model: Path, config: dict[str, Any] | None = None
) -> ServiceProcess:
    settings: dict[str, Any] = {
        "http": {"enabled": True, "host": "127.0.0.1", "port": free_port()},
        # HA-sized prompts need the plan's window; greedy keeps the tiny model's output fixed.
        "engine": {"context_tokens": 4096, "max_tokens": 64, "temperature": 0},
    }
    for key, value in (config or {}).items():
        settings[key] = {**settings.get(key, {}), **value}
    return ServiceProcess(workdir, broker.port, model, config=settings)


def serve_http(service: ServiceProcess, broker: Broker) -> Iterator[ServiceProcess]:
    watcher = Client(broker.host, broker.port)
    try:
        with running(service, watcher):
            yield service
    finally:
        watcher.close()


def port_of(service: ServiceProcess) -> int:
    return int(service.settings["http"]["port"])


def url_of(service: ServiceProcess) -> str:
    return f"http://127.0.0.1:{port_of(service)}"


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def lines(self) -> list[Any]:
        return [json.loads(line) for line in self.body.splitlines() if line.strip()]


def call(
    service: ServiceProcess,
    method: str,
    path: str,
    body: dict[str, Any] | bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> Answer:
    conn = http.client.HTTPConnection("127.0.0.1", port_of(service), timeout=timeout)
    try:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        conn.request(method, path, body=data, headers=headers or {})
        response = conn.getresponse()
        return Answer(response.status, dict(response.getheaders()), response.read())
    finally:
        conn.close()


def stats(service: ServiceProcess) -> dict[str, Any]:
    data: dict[str, Any] = call(service, "GET", "/api/edge/stats").json()
    return data


def stats_after_stop(service: ServiceProcess, seen: int) -> dict[str, Any]:
    """The counters once more than `seen` abandoned requests have ended (the server
    holds the answer until then, up to 10 s)."""
    data: dict[str, Any] = call(service, "GET", f"/api/edge/stats?stops_after={seen}").json()
    return data
