"""The page's listener from a test: plain HTTP requests from a chosen loopback source
address, and a service in add-on mode whose ingress rule allows that address."""

from __future__ import annotations

import contextlib
import http.client
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.conftest import Broker, free_port
from tests.mqtt_helpers import Client, ServiceProcess, running

PEER = "127.0.0.2"  # stands for the Supervisor's ingress address 172.30.32.2
OTHER = "127.0.0.1"  # any other client


def request(
    port: int,
    method: str,
    path: str,
    *,
    source: str = PEER,
    host: str = "127.0.0.1",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    """One request over a fresh connection from `source`; (status, body)."""
    connection = http.client.HTTPConnection(host, port, timeout=30, source_address=(source, 0))
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def web_port(service: ServiceProcess) -> int:
    port: int = service.settings["web"]["port"]
    return port


@contextlib.contextmanager
def page_service(
    broker: Broker,
    model_dir: Path,
    workdir: Path,
    *,
    addon: bool = True,
    config: dict[str, Any] | None = None,
) -> Iterator[ServiceProcess]:
    """The real service with its page on a free port; in add-on mode (the Supervisor's
    token set) the ingress rule allows PEER instead of 172.30.32.2."""
    settings: dict[str, Any] = {"web": {"enabled": True, "port": free_port()}}
    env = {"SUPERVISOR_TOKEN": "test-token", "EDGE_ASSISTANT_INGRESS_PEER": PEER} if addon else {}
    service = ServiceProcess(
        workdir, broker.port, model_dir, config={**(config or {}), **settings}, env=env
    )
    watcher = Client(broker.host, broker.port)
    try:
        with running(service, watcher):
            # The page is bound before the worker starts, so before "online".
            status, _ = request(
                web_port(service), "GET", "/api/info", source=PEER if addon else OTHER
            )
            assert status == 200
            yield service
    finally:
        watcher.close()
