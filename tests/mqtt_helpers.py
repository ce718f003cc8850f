"""What the service tests share: a recording MQTT client and the service as a subprocess.

The service is always the real program (`python -m assistant serve --config FILE`) talking
to the real Mosquitto the suite starts; the client is plain paho, as a device would use.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psutil
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

REPO = Path(__file__).resolve().parent.parent
WAIT_S = 15.0  # every wait in these tests is bounded; generous for a loaded 2-core box


def unique(prefix: str) -> str:
    """A topic level / client id no other test uses."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@dataclass(frozen=True)
class Received:
    """One message a test client received."""

    topic: str
    payload: bytes
    retain: bool
    response_topic: str | None
    correlation_data: bytes | None
    at: float = field(default_factory=time.monotonic)

    def json(self) -> Any:
        return json.loads(self.payload)

    @property
    def text(self) -> str:
        return self.payload.decode("utf-8", "replace")


class Client:
    """A paho client on its own network thread that records everything it receives."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str | None = None,
        protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv5,
        clean: bool = True,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.v5 = protocol == MQTTProtocolVersion.MQTTv5
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or unique("test"),
            protocol=protocol,
            clean_session=None if self.v5 else clean,
        )
        self.client.max_inflight_messages_set(1000)
        self.received: list[Received] = []
        self._cond = threading.Condition()
        self._connected = threading.Event()
        self._subacks: set[int] = set()
        self.client.on_message = self._on_message
        self.client.on_connect = lambda *_a: self._connected.set()
        self.client.on_subscribe = self._on_subscribe
        self.client.on_socket_open = _no_delay
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.connect(
            host,
            port,
            keepalive=30,
            clean_start=True if self.v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
        )
        self.client.loop_start()
        if not self._connected.wait(WAIT_S):
            self.close()
            raise TimeoutError(f"test client could not connect to {host}:{port}")

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        props = getattr(msg, "properties", None)
        response = getattr(props, "ResponseTopic", None) if props else None
        corr = getattr(props, "CorrelationData", None) if props else None
        item = Received(
            msg.topic,
            bytes(msg.payload),
            bool(msg.retain),
            response if isinstance(response, str) else None,
            bytes(corr) if corr is not None else None,
        )
        with self._cond:
            self.received.append(item)
            self._cond.notify_all()

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, mid: int, *_a: Any) -> None:
        with self._cond:
            self._subacks.add(mid)
            self._cond.notify_all()

    def subscribe(self, *filters: str, retained: bool = True) -> None:
        """QoS 1; blocks until the broker confirmed. `retained=False`: no retained copies."""
        if self.v5:
            handling = (
                SubscribeOptions.RETAIN_SEND_ON_SUBSCRIBE
                if retained
                else SubscribeOptions.RETAIN_DO_NOT_SEND
            )
            opts = SubscribeOptions(qos=1, retainHandling=handling)
            _, mid = self.client.subscribe([(f, opts) for f in filters])
        else:
            _, mid = self.client.subscribe([(f, 1) for f in filters])
        assert mid is not None
        with self._cond:
            assert self._cond.wait_for(lambda: mid in self._subacks, WAIT_S), "no SUBACK"

    def publish(
        self,
        topic: str,
        payload: str | bytes | dict[str, Any],
        *,
        retain: bool = False,
        response_topic: str | None = None,
        correlation_data: bytes | None = None,
        wait: bool = True,
    ) -> mqtt.MQTTMessageInfo:
        if isinstance(payload, dict):
            payload = json.dumps(payload)
        props = None
        if response_topic is not None or correlation_data is not None:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            if response_topic is not None:
                props.ResponseTopic = response_topic
            if correlation_data is not None:
                props.CorrelationData = correlation_data
        info = self.client.publish(topic, payload, qos=1, retain=retain, properties=props)
        if wait:
            info.wait_for_publish(WAIT_S)
        return info

    def messages(self, match: Callable[[Received], bool] | str | None = None) -> list[Received]:
        """What was received so far (a str matches the topic exactly)."""
        test = _matcher(match)
        with self._cond:
            return [m for m in self.received if test(m)]

    def wait_for(
        self,
        match: Callable[[Received], bool] | str | None,
        count: int = 1,
        timeout: float = WAIT_S,
    ) -> list[Received]:
        """Block until `count` matching messages arrived; fail the test otherwise."""
        test = _matcher(match)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [m for m in self.received if test(m)]
                left = deadline - time.monotonic()
                if len(found) >= count or left <= 0:
                    break
                self._cond.wait(left)
        if len(found) < count:
            raise AssertionError(f"got {len(found)} of {count} expected messages in {timeout} s")
        return found

    def wait_until(self, done: Callable[[list[Received]], bool], timeout: float = WAIT_S) -> bool:
        """Block until `done(every message so far)` holds (woken by each arrival, no
        polling); whether it did within `timeout`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not done(list(self.received)):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def clear(self) -> None:
        with self._cond:
            self.received.clear()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.disconnect()
        self.client.loop_stop()
        # paho closes its wake-up socket pair only in __del__; when the client is
        # collected in a cycle the sockets may go first and warn (ResourceWarning, an
        # error under filterwarnings): close them now, with paho's own reset.
        self.client._reset_sockets(sockpair_only=True)


def _no_delay(_c: mqtt.Client, _u: Any, sock: Any) -> None:
    """Small packets leave at once (paho leaves Nagle on: ~40 ms stalls on loopback)."""
    if isinstance(sock, socket.socket) and sock.family == socket.AF_INET:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _matcher(match: Callable[[Received], bool] | str | None) -> Callable[[Received], bool]:
    if match is None:
        return lambda _m: True
    if isinstance(match, str):
        topic = match
        return lambda m: m.topic == topic
    return match


def final_for(request_id: str) -> Callable[[Received], bool]:
    """The final reply or error of one request (not its stream chunks)."""

    def test(m: Received) -> bool:
        if m.topic.endswith("/stream"):
            return False
        try:
            body = m.json()
        except (ValueError, RecursionError):  # a spy also sees the tests' hostile prompts
            return False
        if not isinstance(body, dict) or body.get("id") != request_id:
            return False
        return "error" in body or "finish_reason" in body

    return test


def finals(client: Client, base: str) -> list[dict[str, Any]]:
    """Every final reply/error body received under `{base}/reply`."""
    out = []
    for m in client.messages(lambda m: m.topic.startswith(f"{base}/reply")):
        if m.topic.endswith("/stream"):
            continue
        body = m.json()
        if isinstance(body, dict):
            out.append(body)
    return out


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class ServiceProcess:
    """`python -m assistant serve` with a config file of its own, logging to a file."""

    def __init__(
        self,
        workdir: Path,
        port: int,
        model_dir: Path,
        *,
        base: str | None = None,
        client_id: str | None = None,
        config: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.base = base or unique("ea")
        self.client_id = client_id or unique("svc")
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        settings: dict[str, Any] = {
            "log_level": "info",
            "mqtt": {
                "host": host,
                "port": port,
                "client_id": self.client_id,
                "base_topic": self.base,
                "keepalive_s": 10,
            },
            "model": {"dir": str(model_dir.parent), "name": model_dir.name},
            "telemetry": {"interval_s": 1},
            # Greedy: no test depends on what the random tiny model happens to sample.
            "engine": {"max_tokens": 16, "context_tokens": 512, "max_batch": 4, "temperature": 0},
            # The page's listener is off unless a test asks for it (ports stay free).
            "web": {"enabled": False},
        }
        self.settings = deep_merge(settings, config or {})
        self.config_path = self.workdir / f"{self.client_id}.yaml"
        self.config_path.write_text(json.dumps(self.settings))  # JSON is YAML
        self.log_path = self.workdir / f"{self.client_id}.log"
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    @property
    def discovery_topic(self) -> str:
        return f"homeassistant/device/{self.client_id}/config"

    def start(self) -> ServiceProcess:
        log = self.log_path.open("ab")
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "assistant", "serve", "--config", str(self.config_path)],
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        return self

    def wait_online(self, client: Client, timeout: float = 30.0) -> None:
        """Until a fresh `online` arrives (client must subscribe to {base}/status first)."""
        since = self.started_at
        client.wait_for(
            lambda m: m.topic == f"{self.base}/status" and m.payload == b"online" and m.at >= since,
            timeout=timeout,
        )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def worker_pids(self) -> list[int]:
        with contextlib.suppress(psutil.NoSuchProcess):
            return [c.pid for c in psutil.Process(self.pid).children(recursive=True)]
        return []

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        """Make sure it is gone (SIGTERM, then SIGKILL)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


@contextlib.contextmanager
def running(service: ServiceProcess, client: Client) -> Iterator[ServiceProcess]:
    """Start the service, wait for `online` (the client must already listen), stop it after."""
    client.subscribe(f"{service.base}/status", retained=False)
    service.start()
    try:
        service.wait_online(client)
        yield service
    finally:
        service.stop()


def serving(service: ServiceProcess, host: str, port: int) -> Iterator[ServiceProcess]:
    """A fixture body: run `service` (a watcher client sees it come online), stop it after."""
    watcher = Client(host, port)
    try:
        with running(service, watcher):
            yield service
    finally:
        watcher.close()


def listening(host: str, port: int, *topics: str) -> Iterator[Client]:
    """A fixture body: a client subscribed to `topics` (live messages only)."""
    client = Client(host, port)
    client.subscribe(*topics, retained=False)
    yield client
    client.close()


def ids(prefix: str, n: int) -> Iterable[str]:
    return (f"{prefix}{i}" for i in range(n))
