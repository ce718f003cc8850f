"""The service: MQTT in, scheduler and sandboxed worker, MQTT out. All wiring lives here.

A prompt travels: paho thread → `MqttBridge` → `Service.on_message` (parse, route, dedupe)
→ session history (`SessionStore`) → `TaskScheduler` → `Supervisor` → worker → deltas and
one final result → reply topic (and, on success, a new turn of its session). Voice front
ends (Hermes over MQTT, the Wyoming server) enter at `Service.ask_voice`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assistant import __version__
from assistant.config import Config
from assistant.core.events import Delta, Finished
from assistant.dedupe import RecentIds
from assistant.engine.request import GenerationRequest, SamplingParams
from assistant.errors import RequestError
from assistant.hardware import HardwareFacts, HardwareMonitor
from assistant.mqtt.bridge import Incoming, MqttBridge
from assistant.mqtt.discovery import discovery_payload, last_reply_payload
from assistant.mqtt.requests import (
    MAX_TEXT,
    AskRequest,
    BadRequest,
    new_id,
    parse_cancel,
    parse_request,
    printable,
)
from assistant.mqtt.streaming import SentenceChunker
from assistant.mqtt.topics import HERMES_SAY_FINISHED, HERMES_TEXT_CAPTURED, Topics, valid_level
from assistant.plan import Plan
from assistant.replies import error_payload, reply_payload
from assistant.scheduler import Task, TaskHandle, TaskScheduler
from assistant.sessions import CHARS_PER_TOKEN, KEPT_FINISH_REASONS, SessionStore, build_messages
from assistant.telemetry import now_iso, telemetry_payload
from assistant.voice import VOICE_PRIORITY, VoiceRequest
from assistant.voice.hermes import HermesVoice
from assistant.voice.supervisor import announce_when_in_addon
from assistant.voice.wyoming_server import HandleServer, describe
from assistant.worker.launch import start_spec
from assistant.worker.supervisor import Supervisor

LOG = logging.getLogger(__name__)
DEDUPE_TTL_S = 600.0  # contract.md: a redelivered id is not run twice within 10 minutes
SHUTDOWN_GRACE_S = 5.0  # in-flight requests may finish this long after SIGTERM
HEALTH_FILE_ENV = "EDGE_ASSISTANT_HEALTH_FILE"  # set by the add-on; unset: no health file
HEARTBEAT_MAX_S = 30.0


def default_client_id() -> str:
    host = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in socket.gethostname())
    return f"edge_assistant_{host}"[:64]


@dataclass
class _Route:
    """Where the answers of one request go."""

    topic: str
    correlation: bytes | None
    stream: str  # "off", "tokens", "sentences"
    session: str | None


class Service:
    def __init__(self, config: Config, facts: HardwareFacts, plan: Plan, model_dir: Path) -> None:
        self.config = config
        self.facts = facts
        self.plan = plan
        self.client_id = config.mqtt.client_id or default_client_id()
        self.topics = Topics.from_config(config.mqtt, config.discovery.prefix, self.client_id)
        self.supervisor = Supervisor(
            start_spec(plan, config, model_dir), log_level=config.log_level
        )
        self.scheduler = TaskScheduler(self.supervisor, config.scheduler, plan.max_batch)
        self.monitor = HardwareMonitor()
        self.recent = RecentIds(DEDUPE_TTL_S)
        self.sessions = SessionStore(config.sessions, plan.context_tokens * CHARS_PER_TOKEN)
        self.started = time.monotonic()
        self.accepting = False
        self.stopping = False
        self.invalid_total = 0
        self._consumers: set[asyncio.Task[None]] = set()
        self._handles: dict[str, TaskHandle] = {}  # requests not yet answered
        self._bridge: MqttBridge | None = None
        self.hermes = HermesVoice(self._publish, self.ask_voice) if config.hermes.enabled else None
        self.wyoming: HandleServer | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._health = Path(os.environ[HEALTH_FILE_ENV]) if HEALTH_FILE_ENV in os.environ else None

    @property
    def bridge(self) -> MqttBridge:
        assert self._bridge is not None
        return self._bridge

    # --- life cycle ---------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> int:
        """Serve until `stop` is set; then shut down in order. Returns the exit code."""
        if self.config.wyoming.enabled and not await self._open_wyoming():
            return 1
        hello = await self.supervisor.start()
        await self.scheduler.start()
        LOG.info(
            "model %s ready (tier %s, %d threads, batch %d)",
            hello.model_id,
            self.plan.tier,
            self.plan.threads,
            self.plan.max_batch,
        )
        loop = asyncio.get_running_loop()
        self._bridge = MqttBridge(
            self.config.mqtt,
            self.client_id,
            self.topics.status,
            loop,
            self.on_message,
            self.on_connect,
        )
        self.accepting = True
        self.bridge.start()
        if self.wyoming is not None:
            wy = self.config.wyoming
            self._spawn(announce_when_in_addon(wy.host, self.wyoming.port), "announce")
        telemetry = asyncio.create_task(self._telemetry_loop(), name="telemetry")
        heartbeat = asyncio.create_task(self._heartbeat_loop(), name="heartbeat")
        await stop.wait()
        LOG.info("stopping: no new prompts; finishing in-flight requests")
        telemetry.cancel()
        heartbeat.cancel()
        for task in self._background:
            task.cancel()
        await self._shutdown()
        return 0

    async def _open_wyoming(self) -> bool:
        """Bind the Wyoming server first: a port in use stops the start with a clear error."""
        wy = self.config.wyoming
        server = HandleServer(
            wy.host, wy.port, self.ask_voice, describe(__version__, self.plan.model.id)
        )
        try:
            await server.open()
        except OSError as err:
            LOG.error("cannot listen for Wyoming on %s:%d: %s", wy.host, wy.port, err)
            return False
        self.wyoming = server
        return True

    def _publish(self, topic: str, payload: str) -> None:
        self.bridge.publish(topic, payload)

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _shutdown(self) -> None:
        """Stop intake → finish or fail in-flight work → offline → stop worker → disconnect."""
        # No unsubscribe: the broker must keep queueing prompts in our persistent session
        # while we are down. Prompts that still arrive are refused with shutting_down.
        self.accepting = False
        self.stopping = True
        if self.wyoming is not None:
            self.wyoming.stop_listening()
        deadline = time.monotonic() + SHUTDOWN_GRACE_S
        while self.scheduler.stats().active and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await self.scheduler.stop()  # queued and still running: shutting_down
        if self._consumers:
            await asyncio.wait(self._consumers, timeout=SHUTDOWN_GRACE_S)
        if self.hermes is not None:
            await self.hermes.stop(SHUTDOWN_GRACE_S)
        if self.wyoming is not None:
            await self.wyoming.close(SHUTDOWN_GRACE_S)
        self.bridge.publish(self.topics.status, "offline", retain=True)
        await self.supervisor.stop()
        await self.bridge.stop()
        if self._health is not None:
            with contextlib.suppress(OSError):
                self._health.unlink()

    def on_connect(self) -> None:
        """(Re)connected: subscribe, announce, describe ourselves."""
        self.bridge.subscribe(self.topics.subscriptions(hermes=self.hermes is not None))
        if self.config.discovery.enabled:
            self.bridge.subscribe([self.topics.ha_status], retained=True)
        self.bridge.publish(self.topics.status, "online", retain=True)
        self.bridge.publish(self.topics.info, json.dumps(self.info()), retain=True)
        self.publish_discovery()
        self.publish_telemetry()
        self.beat()

    def info(self) -> dict[str, Any]:
        hello = self.supervisor.hello
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
        stats = self.scheduler.stats()
        payload = telemetry_payload(
            self.monitor,
            instance=self.client_id,
            started=self.started,
            cpu_count=self.facts.cores,
            worker_rss_mb=self.supervisor.worker_rss_mb(),
            queue_depth=stats.queue_depth,
            active_requests=stats.active,
            requests_total=stats.requests_total,
            errors_total=stats.errors_total + self.invalid_total,
            errors_by_code=dict(stats.errors_by_code),
            tokens_per_s=stats.tokens_per_s,
            model=self.plan.model.id,
            tier=self.plan.tier,
            worker_restarts=self.supervisor.restarts,
            mqtt_connects=self.bridge.connects,
        )
        payload["sessions"] = len(self.sessions)
        self.bridge.publish(self.topics.telemetry, json.dumps(payload), retain=True)

    @property
    def heartbeat_s(self) -> float:
        return min(self.config.telemetry.interval_s, HEARTBEAT_MAX_S)

    async def _heartbeat_loop(self) -> None:
        while True:
            self.beat()
            await asyncio.sleep(self.heartbeat_s)

    def beat(self) -> None:
        """Refresh the health file (the add-on's Docker HEALTHCHECK reads its age) while
        connected and the worker is ready; written atomically."""
        if self._health is None or not self.bridge.connected or not self.supervisor.worker_ready:
            return
        payload = json.dumps({"ts": round(time.time()), "interval_s": round(self.heartbeat_s)})
        temporary = self._health.with_name(self._health.name + ".tmp")
        try:
            self._health.parent.mkdir(parents=True, exist_ok=True)
            temporary.write_text(payload + "\n")
            temporary.replace(self._health)
        except OSError as err:
            LOG.warning("cannot write the health file %s: %s", self._health, err)

    # --- prompts ------------------------------------------------------------------------

    def on_message(self, msg: Incoming) -> None:
        """Every received message; never raises (a bad one is answered, not fatal)."""
        try:
            self._handle(msg)
        except Exception:  # a bug must not stop the loop: log it and keep serving
            LOG.exception("unexpected error handling a message on %r", printable(msg.topic))

    def _handle(self, msg: Incoming) -> None:
        topics = self.topics
        if msg.topic == topics.ha_status:
            if msg.payload.strip() == b"online":
                self.publish_discovery()
            return
        if msg.retain:
            LOG.info("ignoring a retained message on %s", printable(msg.topic))
            return
        if msg.topic == topics.cancel:
            self._cancel(msg)
            return
        if (key := topics.session_of_reset(msg.topic)) is not None:
            self._reset_session(key, msg)
            return
        if self.hermes is not None and msg.topic == HERMES_TEXT_CAPTURED:
            self.hermes.on_text_captured(msg.payload)  # while stopping: a spoken apology
            return
        if self.hermes is not None and msg.topic == HERMES_SAY_FINISHED:
            self.hermes.on_say_finished(msg.payload)
            return
        source = topics.source_of(msg.topic)
        if msg.topic != topics.ask and source is None:
            return
        if source is not None and not valid_level(source):
            self._reject(
                None,
                topics.reply,
                msg.correlation_data,
                RequestError(
                    "invalid_request", "the source topic level must match [A-Za-z0-9_-]{1,64}"
                ),
            )
            return
        default_topic = topics.reply_for(source) if source else topics.reply
        try:
            request = parse_request(msg.payload, source)
        except BadRequest as err:
            topic = self._requested_topic(msg.response_topic, None, default_topic)
            self.invalid_total += 1
            self._reject(
                err.request_id,
                topic,
                msg.correlation_data,
                RequestError("invalid_request", err.message),
            )
            return
        requested = msg.response_topic or request.reply_to
        if requested is not None:
            problem = topics.reply_topic_problem(requested)
            if problem is not None:
                self.invalid_total += 1
                self._reject(
                    request.id,
                    topics.reply,
                    msg.correlation_data,
                    RequestError(
                        "forbidden_reply_topic",
                        f"reply topic {printable(requested, 80)!r} {problem}",
                    ),
                )
                return
        route = _Route(
            requested or default_topic, msg.correlation_data, request.stream, request.session
        )
        key = request.id if request.id else ""
        if msg.dup and not key:
            key = f"mid:{msg.mid}:{hash(msg.payload)}"
        if key and self.recent.seen_before(key):
            LOG.info("request %s was already received: not run twice", printable(key, 64))
            return
        if not self.accepting:  # after parsing and dedupe: the refusal carries the id
            self._reject(
                request.id,
                route.topic,
                msg.correlation_data,
                RequestError("shutting_down", "the service is stopping"),
            )
            return
        self._submit(request, route)

    def _requested_topic(self, response: str | None, reply_to: str | None, default: str) -> str:
        for candidate in (response, reply_to):
            if candidate is not None and self.topics.reply_topic_problem(candidate) is None:
                return candidate
        return default

    def _cancel(self, msg: Incoming) -> None:
        try:
            request_id = parse_cancel(msg.payload)
        except BadRequest as err:
            self._reject(
                None,
                self.topics.reply,
                msg.correlation_data,
                RequestError("invalid_request", err.message),
            )
            return
        if request_id == "*":
            for handle in list(self._handles.values()):
                self.scheduler.cancel_task(handle)
        else:
            self.scheduler.cancel_task(request_id)

    def _reset_session(self, key: str, msg: Incoming) -> None:
        if not valid_level(key):
            error = RequestError("invalid_request", "a session key must match [A-Za-z0-9_-]{1,64}")
            self._reject(None, self.topics.reply, msg.correlation_data, error)
            return
        forgotten = self.sessions.reset(key)
        LOG.info("session %s reset%s", key, "" if forgotten else " (it had no history)")

    def _reject(
        self, request_id: str | None, topic: str, correlation: bytes | None, error: RequestError
    ) -> None:
        LOG.info("request %s refused: %s (%s)", request_id, error.code, printable(error.message))
        self.bridge.publish(
            topic, json.dumps(error_payload(request_id, error)), correlation_data=correlation
        )

    def _generation_request(self, request: AskRequest) -> GenerationRequest:
        """The engine's request: system prompt, the session's turns as of now, the text."""
        eng = self.config.engine
        system = request.system if request.system is not None else eng.system_prompt
        messages = build_messages(system, self.sessions.history(request.session), request.text)
        temperature = eng.temperature if request.temperature is None else request.temperature
        sampling = SamplingParams(
            temperature=temperature,
            top_k=request.top_k or 0,
            top_p=request.top_p if request.top_p is not None else 1.0,
        )
        max_tokens = min(request.max_tokens or eng.max_tokens, eng.max_tokens)
        return GenerationRequest(request.id, messages, max_tokens, sampling)

    def _start(self, request: AskRequest) -> TaskHandle:
        task = Task(self._generation_request(request), request.source, request.timeout_s)
        handle = self.scheduler.submit_task(task, request.priority)
        self._handles[handle.id] = handle
        return handle

    def _finished(self, handle: TaskHandle, request: AskRequest, event: Finished) -> None:
        """A request's final event: only a successful reply becomes a turn of its session."""
        result = event.result
        if request.session and result is not None and result.finish_reason in KEPT_FINISH_REASONS:
            self.sessions.append(request.session, request.text, result.text)
        if self._handles.get(handle.id) is handle:
            del self._handles[handle.id]

    def _submit(self, request: AskRequest, route: _Route) -> None:
        handle = self._start(request)
        consumer = asyncio.create_task(
            self._answer(handle, request, route), name=f"answer-{request.id}"
        )
        self._consumers.add(consumer)
        consumer.add_done_callback(self._consumers.discard)

    async def ask_voice(self, voice: VoiceRequest) -> Finished:
        """Run recognised speech as a request (Hermes, Wyoming); its one final event."""
        rid = voice.request_id or new_id()
        if not self.accepting:
            error = (
                RequestError("shutting_down", "the service is stopping")
                if self.stopping
                else RequestError("busy", "the service is starting")
            )
            return Finished(rid, error=error)
        if not voice.text.strip():
            return Finished(rid, error=RequestError("invalid_request", "empty text"))
        if len(voice.text) > MAX_TEXT:
            message = f"text is longer than {MAX_TEXT:,} characters"
            return Finished(rid, error=RequestError("invalid_request", message))
        request = AskRequest(
            id=rid,
            text=voice.text,
            source=voice.source,
            session=voice.session,
            priority=VOICE_PRIORITY,
        )
        handle = self._start(request)
        final = await handle.result()
        self._finished(handle, request, final)
        return final

    async def _answer(self, handle: TaskHandle, request: AskRequest, route: _Route) -> None:
        """Publish the stream (if asked) and exactly one final message for a request."""
        seq = 0
        chunker = SentenceChunker() if route.stream == "sentences" else None
        stream_topic = f"{route.topic}/stream"

        def chunk(text: str) -> None:
            nonlocal seq
            payload = {"id": handle.id, "seq": seq, "delta": text}
            self.bridge.publish(
                stream_topic, json.dumps(payload), correlation_data=route.correlation
            )
            seq += 1

        async for event in handle.stream():
            if isinstance(event, Delta):
                if chunker is not None:
                    for sentence in chunker.push(event.text):
                        chunk(sentence)
                elif route.stream == "tokens":
                    chunk(event.text)
                continue
            if chunker is not None and (rest := chunker.flush()):
                chunk(rest)
            if event.result is not None:
                payload = reply_payload(event.result, self.plan.model.id, route.session)
                last = last_reply_payload(handle.id, event.result.text, now_iso())
                self.bridge.publish(self.topics.last_reply, json.dumps(last), retain=True)
            else:
                error = event.error or RequestError("engine_failure", "no result")
                payload = error_payload(handle.id, error)
                if error.code == "busy":  # never ran: a retry with the same id must run
                    self.recent.forget(handle.id)
            self.bridge.publish(
                route.topic, json.dumps(payload), correlation_data=route.correlation
            )
            self._finished(handle, request, event)
