"""One request's answer on MQTT: its stream (token deltas or whole sentences, if asked)
on `{reply topic}/stream`, then exactly one reply or error on the reply topic."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Protocol

from assistant.core.api import Handle
from assistant.core.events import Delta, Finished
from assistant.mqtt.discovery import last_reply_payload
from assistant.mqtt.requests import StreamMode
from assistant.mqtt.streaming import SentenceChunker
from assistant.replies import ErrorReply, Reply, StreamChunk
from assistant.telemetry import now_iso

# A retained reply nobody collected (its asker gave up) is dropped by the broker after
# this long (MQTT 5); the asker deletes it itself as soon as it has it.
RETAINED_REPLY_EXPIRY_S = 600


class Publish(Protocol):
    """What answering needs from the bridge (`MqttBridge.publish`): a QoS 1 publish,
    optionally retained or with MQTT 5 correlation data."""

    def __call__(
        self,
        topic: str,
        payload: str,
        *,
        retain: bool = False,
        correlation_data: bytes | None = None,
        expiry_s: int | None = None,
    ) -> None: ...


@dataclass(frozen=True)
class Route:
    """Where the answers of one request go."""

    topic: str
    correlation: bytes | None
    stream: StreamMode
    session: str | None
    retain: bool = False  # the final message only (contract: "retain")


class _Stream:
    """The `/stream` messages of one request, numbered from 0."""

    def __init__(self, publish: Publish, request_id: str, route: Route) -> None:
        self._publish = publish
        self._id = request_id
        self._route = route
        self._seq = 0
        self._chunker = SentenceChunker() if route.stream == "sentences" else None

    def push(self, text: str) -> None:
        if self._chunker is not None:
            for sentence in self._chunker.push(text):
                self._send(sentence)
        elif self._route.stream == "tokens":
            self._send(text)

    def flush(self) -> None:
        if self._chunker is not None and (rest := self._chunker.flush()):
            self._send(rest)

    def _send(self, text: str) -> None:
        chunk = StreamChunk(self._id, self._seq, text)
        topic = f"{self._route.topic}/stream"
        self._publish(
            topic, json.dumps(chunk.to_payload()), correlation_data=self._route.correlation
        )
        self._seq += 1


async def answer(
    handle: Handle, route: Route, publish: Publish, model_id: str, last_reply_topic: str
) -> Finished:
    """Publish the stream (if asked) and the one final message of a request."""
    stream = _Stream(publish, handle.id, route)
    async for event in handle.events():
        if isinstance(event, Delta):
            stream.push(event.text)
            continue
        stream.flush()
        if event.result is not None:
            payload = Reply.of(event.result, model_id, route.session).to_payload()
            last = last_reply_payload(handle.id, event.result.text, now_iso())
            publish(last_reply_topic, json.dumps(last), retain=True)
        else:
            payload = ErrorReply.of(handle.id, event.error).to_payload()
        publish(
            route.topic,
            json.dumps(payload),
            retain=route.retain,
            correlation_data=route.correlation,
            expiry_s=RETAINED_REPLY_EXPIRY_S if route.retain else None,
        )
        return event
    raise RuntimeError(f"request {handle.id!r} ended without a final event")
