"""The service's wiring: the core, the front ends around it, and the shutdown order.

A prompt travels: paho thread → `MqttBridge` → `MqttFrontEnd` (or Hermes, Wyoming) →
`Request` → `Core` (sessions, prompt) → `TaskScheduler` → worker client (`Supervisor`) →
sandboxed worker → engine → deltas and one final result → back out the same front end.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from assistant import __version__
from assistant.config import Config
from assistant.core.core import Core
from assistant.hardware import HardwareFacts
from assistant.health import HealthFile
from assistant.http.models import card_for_plan
from assistant.http.server import HttpServer
from assistant.mqtt.bridge import MqttBridge
from assistant.mqtt.discovery import discovery_payload
from assistant.mqtt.front_end import MqttFrontEnd
from assistant.mqtt.topics import Topics
from assistant.plan import Plan
from assistant.supervisor_api import announce_wyoming
from assistant.telemetry import HardwareMonitor, Telemetry
from assistant.voice.hermes import HermesVoice
from assistant.voice.languages import model_languages
from assistant.voice.wyoming_server import HandleServer, describe
from assistant.web.app import PageServer
from assistant.web.page import open_page

LOG = logging.getLogger(__name__)
SHUTDOWN_GRACE_S = 5.0  # in-flight requests may finish this long after SIGTERM


def default_client_id() -> str:
    host = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in socket.gethostname())
    return f"edge_assistant_{host}"[:64]


class Service:
    def __init__(self, config: Config, facts: HardwareFacts, plan: Plan, model_dir: Path) -> None:
        self.config = config
        self.facts = facts
        self.plan = plan
        self.client_id = config.mqtt.client_id or default_client_id()
        self.topics = Topics.from_config(config.mqtt, config.discovery.prefix, self.client_id)
        self.core = Core.for_plan(config, plan, model_dir)
        self.hermes = HermesVoice(self._publish, self.core) if config.hermes.enabled else None
        self.mqtt = MqttFrontEnd(
            self.core,
            self.topics,
            self._publish,
            hermes=self.hermes,
            on_ha_online=self.publish_discovery,
        )
        self.wyoming: HandleServer | None = None
        self.http: HttpServer | None = None
        self.page: PageServer | None = None
        self._model_dir = model_dir
        self.telemetry = Telemetry(self.core, plan, facts, self.client_id, self._counters)
        self.health = HealthFile.from_env(config.telemetry.interval_s, self._healthy)
        self._bridge: MqttBridge | None = None
        self._background: set[asyncio.Task[Any]] = set()

    @property
    def bridge(self) -> MqttBridge:
        assert self._bridge is not None
        return self._bridge

    # --- life cycle ---------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> int:
        """Serve until `stop` is set; then shut down in order. Returns the exit code."""
        if self.config.wyoming.enabled and not await self._open_wyoming():
            return 1
        if self.config.http.enabled and not await self._open_http():
            return 1
        if self.config.web.enabled and not await self._open_page():
            return 1
        hello = await self.core.start()
        plan = self.plan
        LOG.info(
            "model %s ready (tier %s, %d threads, batch %d)",
            hello.model_id,
            plan.tier,
            plan.threads,
            plan.max_batch,
        )
        self._bridge = MqttBridge(
            self.config.mqtt,
            self.client_id,
            self.topics.status,
            asyncio.get_running_loop(),
            self.mqtt.on_message,
            self.on_connect,
        )
        self.bridge.start()
        if self.wyoming is not None:
            self._spawn(announce_wyoming(self.config.wyoming.host, self.wyoming.port))
        self._spawn(self._telemetry_loop())
        self._spawn(self.health.run())
        await stop.wait()
        LOG.info("stopping: no new prompts; finishing in-flight requests")
        for task in self._background:
            task.cancel()
        await self._shutdown()
        return 0

    async def _open_wyoming(self) -> bool:
        """Bind the Wyoming server first: a port in use stops the start with a clear error."""
        wy = self.config.wyoming
        languages = wy.languages or model_languages(self.plan.model.id)
        info = describe(__version__, self.plan.model.id, languages)
        server = HandleServer(wy.host, wy.port, self.core, info)
        try:
            await server.open()
        except OSError as err:
            LOG.error("cannot listen for Wyoming on %s:%d: %s", wy.host, wy.port, err)
            return False
        self.wyoming = server
        return True

    async def _open_http(self) -> bool:
        """Bind the HTTP API before the worker starts (a port in use stops the start);
        until the core runs, requests get 503 "starting"."""
        cfg = self.config.http
        card = card_for_plan(self.plan, self._model_dir)
        server = HttpServer(cfg, self.core, card, __version__)
        try:
            await server.open()
        except OSError as err:
            LOG.error("cannot listen for HTTP on %s:%d: %s", cfg.host, cfg.port, err)
            if self.wyoming is not None:
                await self.wyoming.close(0)
            return False
        self.http = server
        return True

    async def _open_page(self) -> bool:
        """Bind the page before the worker starts, like the other listeners: a port in use
        stops the start."""
        monitor = HardwareMonitor()  # its own CPU baseline: the page samples every second
        try:
            self.page = await open_page(
                self.config.web,
                self.core,
                lambda: self.telemetry.payload(monitor),
                instance=self.client_id,
                facts=self.facts,
                plan=self.plan,
                models_dir=self._model_dir.parent,  # the models present there
            )
        except OSError as err:
            LOG.error("cannot listen for the page on port %d: %s", self.config.web.port, err)
            if self.wyoming is not None:
                await self.wyoming.close(0)
            if self.http is not None:
                await self.http.close()
            return False
        return True

    async def _shutdown(self) -> None:
        """Stop intake → finish or fail in-flight work → offline → stop worker → disconnect."""
        # No unsubscribe: the broker must keep queueing prompts in our persistent session
        # while we are down. Prompts that still arrive are refused with shutting_down.
        if self.wyoming is not None:
            self.wyoming.stop_listening()
        await self.core.drain(SHUTDOWN_GRACE_S)
        if self.http is not None:
            await self.http.close()  # answers in progress have had their final by now
        await self.mqtt.stop(SHUTDOWN_GRACE_S)
        if self.hermes is not None:
            await self.hermes.stop(SHUTDOWN_GRACE_S)
        if self.wyoming is not None:
            await self.wyoming.close(SHUTDOWN_GRACE_S)
        if self.page is not None:  # after the drain: try-it streams got their finals
            await self.page.stop()
        self.bridge.publish(self.topics.status, "offline", retain=True)
        await self.core.close()
        await self.bridge.stop()
        self.health.remove()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # --- MQTT -----------------------------------------------------------------------------

    def _publish(
        self,
        topic: str,
        payload: str,
        *,
        retain: bool = False,
        correlation_data: bytes | None = None,
        expiry_s: int | None = None,
    ) -> None:
        self.bridge.publish(
            topic, payload, retain=retain, correlation_data=correlation_data, expiry_s=expiry_s
        )

    def on_connect(self) -> None:
        """(Re)connected: subscribe, announce, describe ourselves."""
        self.bridge.subscribe(self.topics.subscriptions(hermes=self.hermes is not None))
        if self.config.discovery.enabled:
            self.bridge.subscribe([self.topics.ha_status], retained=True)
        self.bridge.publish(self.topics.status, "online", retain=True)
        self.bridge.publish(self.topics.info, json.dumps(self.info()), retain=True)
        self.publish_discovery()
        self.publish_telemetry()
        self.health.beat()

    def info(self) -> dict[str, Any]:
        hello = self.core.worker.hello
        return {
            "version": __version__,
            "instance": self.client_id,
            "model": self.plan.model.id,
            "tier": self.plan.tier,
            "plan": self.plan.to_dict(),
            "hardware": self.facts.to_dict(),
            "sandbox": hello.sandbox if hello else None,
            "topics": {
                "ask": self.topics.ask,
                "reply": self.topics.reply,
                "cancel": self.topics.cancel,
                "session_reset": f"{self.topics.session}/{{key}}/reset",
            },
            "wyoming_port": self.wyoming.port if self.wyoming is not None else None,
            "http_port": self.http.port if self.http is not None else None,
            "config": self.config.public_dict(),
        }

    def publish_discovery(self) -> None:
        if self.config.discovery.enabled:
            payload = discovery_payload(self.topics, self.plan.model.id, self.plan.tier)
            self.bridge.publish(self.topics.discovery, json.dumps(payload), retain=True)

    async def _telemetry_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.telemetry.interval_s)
            self.publish_telemetry()

    def publish_telemetry(self) -> None:
        payload = self.telemetry.payload()
        if self.http is not None:
            payload["http"] = self.http.stats.to_dict()
        self.bridge.publish(self.topics.telemetry, json.dumps(payload), retain=True)

    def _counters(self) -> tuple[int, int]:
        invalid = self.mqtt.invalid_total
        if self.http is not None:
            invalid += self.http.stats.invalid_total
        # The page samples from before the MQTT link exists (no connects yet).
        connects = self._bridge.connects if self._bridge is not None else 0
        return connects, invalid

    def _healthy(self) -> bool:
        return self.bridge.connected and self.core.worker.worker_ready
