"""The broker from the Supervisor's MQTT service (assistant/supervisor_api.py).

The Home Assistant Supervisor cannot run here: a small local HTTP server (standard
library only) stands in for it and answers `GET /services/mqtt` the way the documented
API does (`{"result": "ok", "data": {...}}`, 400 "Service not enabled" while no broker
add-on is up, 401/403 for a bad token or a missing `services: [mqtt:need]`). The service
is pointed at it through `EDGE_ASSISTANT_SUPERVISOR_URL`; the broker it names is the
test session's real Mosquitto.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from assistant.config import Config, MqttConfig, TlsConfig
from assistant.supervisor_api import (
    BrokerInfo,
    SupervisorError,
    SupervisorStoppedError,
    apply_broker,
    broker_from_supervisor,
    fetch_mqtt_service,
    is_manual_broker,
)
from tests.conftest import Broker, free_port
from tests.mqtt_helpers import Client, ServiceProcess, running
from tests.supervisor_double import serving

TOKEN = "supervisor-token-for-the-test-double"
PASSWORD = "broker-password-from-the-double"
NOT_ENABLED = (400, {"result": "error", "message": "Service not enabled"})


def service_ok(host: str = "core-mosquitto", port: int = 1883, ssl: bool = False) -> Any:
    data = {
        "host": host,
        "port": port,
        "ssl": ssl,
        "protocol": "3.1.1",
        "username": "addons",
        "password": PASSWORD,
    }
    return (200, {"result": "ok", "data": data})


@dataclass
class SupervisorDouble:
    """Answers `GET /services/mqtt` from a script: one answer per request, the last one
    repeated; records the path and Authorization header of every request."""

    url: str = ""
    answers: list[tuple[int, Any]] = field(default_factory=list)
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def script(self, *answers: tuple[int, Any]) -> None:
        with self.lock:
            self.answers = list(answers)
            self.requests.clear()

    def answer(self, path: str, auth: str | None) -> tuple[int, Any]:
        with self.lock:
            self.requests.append((path, auth))
            if path != "/services/mqtt":
                return 404, {"result": "error", "message": "not found"}
            if auth != f"Bearer {TOKEN}":
                return 401, {"result": "error", "message": "Unauthorized"}
            return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


@pytest.fixture(scope="module")
def supervisor() -> Iterator[SupervisorDouble]:
    with serving(SupervisorDouble()) as double:
        yield double


def addon_env(supervisor: SupervisorDouble, **extra: str) -> dict[str, str]:
    return {"SUPERVISOR_TOKEN": TOKEN, "EDGE_ASSISTANT_SUPERVISOR_URL": supervisor.url, **extra}


# --- the client ---------------------------------------------------------------------


def test_the_broker_and_its_credentials_are_picked_up(supervisor: SupervisorDouble) -> None:
    supervisor.script(service_ok())
    broker = fetch_mqtt_service(TOKEN, supervisor.url)
    assert broker == BrokerInfo("core-mosquitto", 1883, False, "addons", PASSWORD, "3.1.1")
    assert supervisor.requests == [("/services/mqtt", f"Bearer {TOKEN}")]
    assert PASSWORD not in repr(broker)


def test_no_broker_add_on_yet_is_retried_until_one_is_up(
    supervisor: SupervisorDouble, caplog: pytest.LogCaptureFixture
) -> None:
    supervisor.script(NOT_ENABLED, NOT_ENABLED, service_ok(port=8883, ssl=True))
    with caplog.at_level(logging.INFO, logger="assistant.supervisor_api"):
        broker = fetch_mqtt_service(TOKEN, supervisor.url, first_delay_s=0.01)
    assert (broker.port, broker.ssl) == (8883, True)
    assert len(supervisor.requests) == 3
    retries = [r for r in caplog.records if "Service not enabled" in r.getMessage()]
    assert len(retries) == 2 and all(r.levelno == logging.WARNING for r in retries)
    assert TOKEN not in caplog.text and PASSWORD not in caplog.text


def test_an_unreachable_supervisor_is_retried_then_given_up() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(SupervisorError, match="gave up after 2 attempts"):
        fetch_mqtt_service(TOKEN, url, first_delay_s=0.01, max_attempts=2)


@pytest.mark.parametrize(("status", "needle"), [(401, "token"), (403, "mqtt:need")])
def test_refused_access_is_fatal_at_once(
    supervisor: SupervisorDouble, status: int, needle: str
) -> None:
    supervisor.script((status, {"result": "error", "message": "refused"}), service_ok())
    with pytest.raises(SupervisorError, match=needle) as raised:
        fetch_mqtt_service(TOKEN, supervisor.url, first_delay_s=0.01)
    assert f"({status})" in str(raised.value)
    assert len(supervisor.requests) == 1  # not retried
    assert TOKEN not in str(raised.value)


def test_a_wrong_token_is_fatal(supervisor: SupervisorDouble) -> None:
    supervisor.script(service_ok())
    with pytest.raises(SupervisorError, match="401"):
        fetch_mqtt_service("not-the-token", supervisor.url)


def test_a_malformed_answer_is_fatal(supervisor: SupervisorDouble) -> None:
    supervisor.script((200, {"result": "ok", "data": {"host": "core-mosquitto", "port": "x"}}))
    with pytest.raises(SupervisorError, match="port"):
        fetch_mqtt_service(TOKEN, supervisor.url)


def test_waiting_stops_when_cancelled(supervisor: SupervisorDouble) -> None:
    supervisor.script(NOT_ENABLED)
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(SupervisorStoppedError):
        fetch_mqtt_service(TOKEN, supervisor.url, first_delay_s=30.0, cancel=cancel)
    assert time.monotonic() - started < 5


# --- manual options and applying the broker ------------------------------------------


def test_manual_broker_options_win_and_the_supervisor_is_not_asked(
    supervisor: SupervisorDouble,
) -> None:
    supervisor.script(service_ok())
    env = addon_env(supervisor)
    manual = Config(mqtt=MqttConfig(host="broker.lan", port=8883, username="me"))
    assert broker_from_supervisor(manual, env) is manual
    # The run script's (or a user's) environment override counts as manual too.
    default = Config()
    env_manual = addon_env(supervisor, EDGE_ASSISTANT_MQTT_HOST="broker.lan")
    assert broker_from_supervisor(default, env_manual) is default
    assert supervisor.requests == []
    # Not an add-on (no token): nothing is asked either.
    assert (
        broker_from_supervisor(default, {"EDGE_ASSISTANT_SUPERVISOR_URL": supervisor.url})
        is default
    )
    assert supervisor.requests == []


def test_without_a_manual_broker_the_supervisors_broker_is_applied(
    supervisor: SupervisorDouble,
) -> None:
    supervisor.script(service_ok(host="core-mosquitto", port=8883, ssl=True))
    config = Config(mqtt=MqttConfig(port=1234, base_topic="kitchen", tls=TlsConfig(insecure=True)))
    assert not is_manual_broker(config, {})
    resolved = broker_from_supervisor(config, addon_env(supervisor))
    mqtt = resolved.mqtt
    assert (mqtt.host, mqtt.port, mqtt.username, mqtt.password) == (
        "core-mosquitto",
        8883,
        "addons",
        PASSWORD,
    )
    assert mqtt.tls == TlsConfig(enabled=True, insecure=True)
    assert mqtt.base_topic == "kitchen"  # everything else is the file's
    assert resolved.engine == config.engine
    assert PASSWORD not in json.dumps(resolved.public_dict())


def test_apply_broker_drops_credentials_the_service_does_not_have() -> None:
    config = Config(mqtt=MqttConfig(username="file-user", password="file-pw"))
    resolved = apply_broker(config, BrokerInfo("mqtt.lan", 1883, False, None, None, None))
    assert (resolved.mqtt.username, resolved.mqtt.password) == (None, None)
    assert resolved.mqtt.tls.enabled is False


# --- the real service ---------------------------------------------------------------


def test_the_service_connects_to_the_broker_the_supervisor_names(
    supervisor: SupervisorDouble, mosquitto: Broker, tiny_model_dir: Path, tmp_path: Path
) -> None:
    # No broker add-on at first (one 400, retried after 1 s), then the test's Mosquitto.
    supervisor.script(NOT_ENABLED, service_ok(host=mosquitto.host, port=mosquitto.port))
    # The file's broker is the default localhost on a port nothing listens on: only
    # the Supervisor's answer can make the service reach Mosquitto.
    service = ServiceProcess(
        tmp_path, free_port(), tiny_model_dir, host="localhost", env=addon_env(supervisor)
    )
    watcher = Client(mosquitto.host, mosquitto.port)
    try:
        with running(service, watcher):
            assert watcher.messages(f"{service.base}/status")[-1].payload == b"online"
    finally:
        watcher.close()
    assert len(supervisor.requests) == 2
    assert all(auth == f"Bearer {TOKEN}" for _, auth in supervisor.requests)
    log = service.log()
    assert "Service not enabled" in log
    assert f"the broker add-on at {mosquitto.host}:{mosquitto.port}" in log
    assert PASSWORD not in log and TOKEN not in log


def test_the_service_stops_cleanly_while_waiting_for_a_broker(
    supervisor: SupervisorDouble, tiny_model_dir: Path, tmp_path: Path
) -> None:
    supervisor.script(NOT_ENABLED)
    service = ServiceProcess(
        tmp_path, free_port(), tiny_model_dir, host="localhost", env=addon_env(supervisor)
    ).start()
    try:
        deadline = time.monotonic() + 30
        while not supervisor.requests and time.monotonic() < deadline:
            time.sleep(0.05)
        assert supervisor.requests, service.log()
        service.signal(signal.SIGTERM)
        assert service.wait(15) == 0, service.log()
    finally:
        service.stop()
