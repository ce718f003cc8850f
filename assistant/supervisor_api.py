"""The one client of the Home Assistant Supervisor API (add-on only): the MQTT broker to
use, and the Wyoming service's discovery announcement.

`GET {supervisor}/services/mqtt` with the add-on's `SUPERVISOR_TOKEN` answers the broker
add-on's address and credentials (the manifest's `services: [mqtt:need]` grants the
read). A 400 "Service not enabled" means no broker add-on is up yet, and a connection
error that the Supervisor is busy: both are retried with backoff. 401/403 are fatal.

A *manual* broker wins and the Supervisor is not asked: `EDGE_ASSISTANT_MQTT_HOST` set,
or `mqtt.host` in the config/options file set to anything but the default `localhost`
(inside an add-on container `localhost` is never a broker). The token and the password
are never logged.

`POST {supervisor}/discovery` with `{"service": "wyoming", "config": {"uri": ...}}` (the
manifest lists `discovery: [wyoming]`) makes Home Assistant offer the Wyoming integration
pointing at this add-on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from assistant.config import ENV_HOST, Config, MqttConfig

LOG = logging.getLogger(__name__)
TOKEN_ENV = "SUPERVISOR_TOKEN"  # set by the Supervisor in every add-on container
# The Supervisor's address inside an add-on. Only tests change it (a local double).
URL_ENV = "EDGE_ASSISTANT_SUPERVISOR_URL"
DEFAULT_URL = "http://supervisor"
TIMEOUT_S = 5.0  # per request; a stop request waits at most this long
FIRST_DELAY_S = 1.0
MAX_DELAY_S = 30.0
ANNOUNCE_DELAYS_S = (0.0, 1.0, 3.0, 10.0)  # the Supervisor may be busy right after a start


class SupervisorError(Exception):
    """A failed call; `retryable` when asking again later may help (the Supervisor is
    unreachable or busy, or no broker add-on is up yet), else fatal (401/403, a malformed
    answer)."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class SupervisorStoppedError(Exception):
    """The wait for a broker was given up because the service is stopping."""


@dataclass(frozen=True)
class BrokerInfo:
    """The broker as the Supervisor's MQTT service describes it."""

    host: str
    port: int
    ssl: bool
    username: str | None
    password: str | None = field(repr=False)
    protocol: str | None  # informational: the HA Mosquitto add-on also accepts MQTT 5

    @classmethod
    def from_payload(cls, data: Any) -> BrokerInfo:
        """The `data` object of the answer; SupervisorError when it is not a broker."""
        if not isinstance(data, dict):
            raise SupervisorError("the MQTT service answer has no data object")
        host, port, ssl = data.get("host"), data.get("port"), data.get("ssl", False)
        if not isinstance(host, str) or not host:
            raise SupervisorError("the MQTT service answer has no host")
        if isinstance(port, str) and port.isdigit():
            port = int(port)
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise SupervisorError(f"the MQTT service answer has no valid port: {port!r}")
        if not isinstance(ssl, bool):
            raise SupervisorError(f"the MQTT service answer has a non-boolean ssl: {ssl!r}")
        return cls(
            host=host,
            port=port,
            ssl=ssl,
            username=_optional_str(data.get("username")),
            password=_optional_str(data.get("password")),
            protocol=_optional_str(data.get("protocol")),
        )


def _optional_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def call(
    token: str, base_url: str, path: str, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One request (GET, or POST with `body`); the answer's `data` object. Raises
    SupervisorError, `retryable` for 400 (a service not up yet), 5xx and network errors."""
    request = urllib.request.Request(
        base_url.rstrip("/") + path,
        data=None if body is None else json.dumps(body).encode(),
        method="GET" if body is None else "POST",
        headers={
            "Authorization": f"Bearer {token}",
            "Accept": "application/json",
            "Content-Type": "application/json",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            raw = response.read()
    except urllib.error.HTTPError as err:
        raise _http_error(err, path) from err
    except (OSError, ValueError) as err:  # URLError, refused, timeout, a bad URL
        message = f"cannot reach the Supervisor at {base_url}: {err}"
        raise SupervisorError(message, retryable=True) from err
    try:
        answer = json.loads(raw or b"{}")
    except ValueError as err:
        raise SupervisorError(f"the Supervisor's answer to {path} is not JSON") from err
    if not isinstance(answer, dict) or answer.get("result", "ok") != "ok":
        raise SupervisorError(f"the Supervisor's answer to {path} is not {{'result': 'ok'}}")
    data = answer.get("data")
    return data if isinstance(data, dict) else {}


def _http_error(err: urllib.error.HTTPError, path: str) -> SupervisorError:
    message = _error_message(err)
    if err.code == 401:
        return SupervisorError(
            "the Supervisor refused the add-on's token (401): is SUPERVISOR_TOKEN "
            "this add-on's own?"
        )
    if err.code == 403:
        return SupervisorError(
            f"the Supervisor does not let this add-on use {path} (403): the manifest must "
            "list it (`services: [mqtt:need]`, `discovery: [wyoming]`)"
        )
    if err.code == 400:
        return SupervisorError(f"not available yet ({message})", retryable=True)
    retryable = err.code >= 500
    return SupervisorError(f"the Supervisor answered {err.code} ({message})", retryable=retryable)


def request_mqtt_service(token: str, base_url: str = DEFAULT_URL) -> BrokerInfo:
    """One `GET /services/mqtt`: the broker, or SupervisorError."""
    data = call(token, base_url, "/services/mqtt")
    if not data:
        raise SupervisorError("the MQTT service answer has no data object")
    return BrokerInfo.from_payload(data)


def _error_message(err: urllib.error.HTTPError) -> str:
    """The Supervisor's `{"result": "error", "message": ...}`, else the HTTP reason."""
    try:
        answer = json.loads(err.read() or b"{}")
    except (OSError, ValueError):
        answer = None
    if isinstance(answer, dict) and isinstance(answer.get("message"), str):
        return str(answer["message"])[:200]
    return str(err.reason)


def fetch_mqtt_service(
    token: str,
    base_url: str = DEFAULT_URL,
    *,
    first_delay_s: float = FIRST_DELAY_S,
    max_delay_s: float = MAX_DELAY_S,
    max_attempts: int | None = None,
    cancel: threading.Event | None = None,
) -> BrokerInfo:
    """Ask until the Supervisor names a broker (backoff `first_delay_s` doubling up to
    `max_delay_s`; `max_attempts` None = until one is up). SupervisorError when fatal or
    out of attempts; SupervisorStoppedError as soon as `cancel` is set."""
    cancel = cancel or threading.Event()
    delay = first_delay_s
    attempt = 0
    while True:
        attempt += 1
        try:
            return request_mqtt_service(token, base_url)
        except SupervisorError as err:
            if not err.retryable:
                raise
            if max_attempts is not None and attempt >= max_attempts:
                raise SupervisorError(f"{err}; gave up after {attempt} attempts") from err
            LOG.warning(
                "MQTT: %s; asking again in %.0f s (attempt %d). Install and start the "
                "Mosquitto broker add-on, or set mqtt.host for another broker.",
                err,
                delay,
                attempt,
            )
        if cancel.wait(delay):
            raise SupervisorStoppedError("stopped while waiting for an MQTT broker")
        delay = min(delay * 2, max_delay_s)


def is_manual_broker(config: Config, env: Mapping[str, str]) -> bool:
    """The user named a broker: it wins over the Supervisor's (see the module doc)."""
    return bool(env.get(ENV_HOST)) or config.mqtt.host != MqttConfig().host


def apply_broker(config: Config, broker: BrokerInfo) -> Config:
    """The config with the broker's address, TLS flag and credentials (replacing any)."""
    mqtt = dataclasses.replace(
        config.mqtt,
        host=broker.host,
        port=broker.port,
        username=broker.username,
        password=broker.password,
        tls=dataclasses.replace(config.mqtt.tls, enabled=broker.ssl),
    )
    return dataclasses.replace(config, mqtt=mqtt)


def broker_from_supervisor(
    config: Config, env: Mapping[str, str], *, cancel: threading.Event | None = None
) -> Config:
    """In an add-on without a manual broker: the config with the Supervisor's broker
    (waiting for one). Anywhere else: the config unchanged."""
    token = env.get(TOKEN_ENV)
    if not token:
        return config
    if is_manual_broker(config, env):
        LOG.info("MQTT: the manual broker %s:%d", config.mqtt.host, config.mqtt.port)
        return config
    broker = fetch_mqtt_service(token, env.get(URL_ENV) or DEFAULT_URL, cancel=cancel)
    LOG.info(
        "MQTT: the broker add-on at %s:%d (TLS %s, %s)",
        broker.host,
        broker.port,
        "on" if broker.ssl else "off",
        "with credentials" if broker.username else "anonymous",
    )
    return apply_broker(config, broker)


def wyoming_uri(host: str, port: int) -> str:
    """How Home Assistant reaches us: a wildcard bind means "this container's name"."""
    if host in ("", "0.0.0.0", "::"):
        host = socket.gethostname()
    return f"tcp://{host}:{port}"


async def announce_wyoming(host: str, port: int, env: Mapping[str, str] | None = None) -> bool:
    """Announce the Wyoming service when running as an add-on (the token is set), with a
    few retries; False when not an add-on or every attempt failed (logged, not fatal)."""
    env = os.environ if env is None else env
    token = env.get(TOKEN_ENV)
    if not token:
        return False
    url = env.get(URL_ENV) or DEFAULT_URL
    body = {"service": "wyoming", "config": {"uri": wyoming_uri(host, port)}}
    for attempt, delay in enumerate(ANNOUNCE_DELAYS_S):
        await asyncio.sleep(delay)
        try:
            await asyncio.to_thread(call, token, url, "/discovery", body)
        except SupervisorError as err:
            LOG.warning("announcing the Wyoming service (try %d): %s", attempt + 1, err)
            continue
        LOG.info("announced the Wyoming service %s to Home Assistant", body["config"])
        return True
    return False
