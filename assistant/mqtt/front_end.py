"""The MQTT front end: every received message routed, prompts translated to `Request`s for
the core and their events back to reply topics (contract.md).

It owns what only MQTT has: reply-topic policy, QoS 1 redelivery (dedupe by id), cancel
and session-reset topics, and Hermes messages (handed to the Hermes front end).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

from assistant.core.api import CoreApi, Handle
from assistant.dedupe import RecentIds
from assistant.errors import RequestError
from assistant.logsafe import printable
from assistant.mqtt.answers import Publish, Route, answer
from assistant.mqtt.bridge import Incoming
from assistant.mqtt.requests import AskMessage, BadRequest, parse_cancel, parse_request
from assistant.mqtt.topics import HERMES_SAY_FINISHED, HERMES_TEXT_CAPTURED, Topics, valid_level
from assistant.replies import ErrorReply
from assistant.voice.hermes import HermesVoice

LOG = logging.getLogger(__name__)
DEDUPE_TTL_S = 600.0  # contract.md: a redelivered id is not run twice within 10 minutes
LEVEL_RULE = "must match [A-Za-z0-9_-]{1,64}"


class MqttFrontEnd:
    def __init__(
        self,
        core: CoreApi,
        topics: Topics,
        publish: Publish,
        *,
        hermes: HermesVoice | None = None,
        on_ha_online: Callable[[], None] = lambda: None,
    ) -> None:
        self.core = core
        self.topics = topics
        self.publish = publish
        self.hermes = hermes
        self.recent = RecentIds(DEDUPE_TTL_S)
        self.invalid_total = 0  # payloads refused before they became requests
        self._on_ha_online = on_ha_online
        self._answers: set[asyncio.Task[None]] = set()
        self._exact: dict[str, Callable[[Incoming], None]] = {topics.cancel: self._cancel}
        if hermes is not None:
            self._exact[HERMES_TEXT_CAPTURED] = lambda m: hermes.on_text_captured(m.payload)
            self._exact[HERMES_SAY_FINISHED] = lambda m: hermes.on_say_finished(m.payload)

    def on_message(self, msg: Incoming) -> None:
        """Every received message; never raises (a bad one is answered, not fatal)."""
        try:
            self._route(msg)
        except Exception:  # a bug must not stop the loop: log it and keep serving
            LOG.exception("unexpected error handling a message on %r", printable(msg.topic))

    async def stop(self, grace_s: float) -> None:
        """Wait (at most `grace_s`) for the answers in progress to be published."""
        if self._answers:
            await asyncio.wait(self._answers, timeout=grace_s)

    def _route(self, msg: Incoming) -> None:
        topics = self.topics
        if msg.topic == topics.ha_status:  # retained on purpose: HA's birth message
            if msg.payload.strip() == b"online":
                self._on_ha_online()
            return
        if msg.retain:
            LOG.info("ignoring a retained message on %s", printable(msg.topic))
            return
        if (handler := self._exact.get(msg.topic)) is not None:
            handler(msg)
        elif (key := topics.session_of_reset(msg.topic)) is not None:
            self._reset_session(key, msg)
        elif msg.topic == topics.ask or topics.source_of(msg.topic) is not None:
            self._ask(msg, topics.source_of(msg.topic))

    def _ask(self, msg: Incoming, source: str | None) -> None:
        topics = self.topics
        if source is not None and not valid_level(source):
            error = RequestError("invalid_request", f"the source topic level {LEVEL_RULE}")
            self._reject(None, topics.reply, msg.correlation_data, error)
            return
        default_topic = topics.reply_for(source) if source else topics.reply
        try:
            ask = parse_request(msg.payload, source)
        except BadRequest as err:
            self.invalid_total += 1
            topic = msg.response_topic or default_topic
            if topics.reply_topic_problem(topic) is not None:
                topic = default_topic
            error = RequestError("invalid_request", err.message)
            self._reject(err.request_id, topic, msg.correlation_data, error)
            return
        reply_topic = self._reply_topic(msg, ask, default_topic)
        if reply_topic is not None and not self._duplicate(msg, ask):
            # Submitted now, in arrival order; answered by a task of its own.
            handle = self.core.submit(ask.request)
            route = Route(
                reply_topic, msg.correlation_data, ask.stream, ask.request.session, ask.retain
            )
            task = asyncio.create_task(self._answer(handle, route), name=f"answer-{handle.id}")
            self._answers.add(task)
            task.add_done_callback(self._answers.discard)

    def _reply_topic(self, msg: Incoming, ask: AskMessage, default: str) -> str | None:
        """The topic to answer on; None (after refusing) when the requested one is not
        allowed."""
        requested = msg.response_topic or ask.reply_to
        if requested is None and ask.retain:
            # A retained reply on a shared topic would be replayed to every subscriber.
            self.invalid_total += 1
            message = "field 'retain' needs a reply topic of the request's own (reply_to)"
            self._reject(
                ask.request.id,
                default,
                msg.correlation_data,
                RequestError("invalid_request", message),
            )
            return None
        if requested is None:
            return default
        problem = self.topics.reply_topic_problem(requested)
        if problem is None:
            return requested
        self.invalid_total += 1
        message = f"reply topic {printable(requested, 80)!r} {problem}"
        error = RequestError("forbidden_reply_topic", message)
        self._reject(ask.request.id, self.topics.reply, msg.correlation_data, error)
        return None

    def _duplicate(self, msg: Incoming, ask: AskMessage) -> bool:
        """A QoS 1 redelivery of a request already received: not run twice."""
        key = ask.request.id if ask.request.id else ""
        if msg.dup and not key:
            key = f"mid:{msg.mid}:{hash(msg.payload)}"
        if key and self.recent.seen_before(key):
            LOG.info("request %s was already received: not run twice", printable(key, 64))
            return True
        return False

    async def _answer(self, handle: Handle, route: Route) -> None:
        model, last_reply = self.core.model_id, self.topics.last_reply
        final = await answer(handle, route, self.publish, model, last_reply)
        if final.error is not None and final.error.code == "busy":
            self.recent.forget(handle.id)  # never ran: a retry with the same id must run

    def _cancel(self, msg: Incoming) -> None:
        try:
            request_id = parse_cancel(msg.payload)
        except BadRequest as err:
            error = RequestError("invalid_request", err.message)
            self._reject(None, self.topics.reply, msg.correlation_data, error)
            return
        if request_id == "*":
            self.core.cancel_all()
        else:
            self.core.cancel(request_id)

    def _reset_session(self, key: str, msg: Incoming) -> None:
        if not valid_level(key):
            error = RequestError("invalid_request", f"a session key {LEVEL_RULE}")
            self._reject(None, self.topics.reply, msg.correlation_data, error)
            return
        forgotten = self.core.reset_session(key)
        LOG.info("session %s reset%s", key, "" if forgotten else " (it had no history)")

    def _reject(
        self, request_id: str | None, topic: str, correlation: bytes | None, error: RequestError
    ) -> None:
        LOG.info("request %s refused: %s (%s)", request_id, error.code, printable(error.message))
        payload = ErrorReply.of(request_id, error).to_payload()
        self.publish(topic, json.dumps(payload), correlation_data=correlation)
