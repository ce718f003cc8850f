"""The contract's reply objects: what is published reads back as the same object, and a
payload that is not one is refused."""

from __future__ import annotations

import json

import pytest

from assistant.core.events import GenerationResult, Timing, Usage
from assistant.errors import RequestError
from assistant.replies import ErrorReply, Reply, StreamChunk


def test_reply_round_trip() -> None:
    result = GenerationResult("r1", "Paris.", "stop", Usage(12, 3), Timing(0.5, 40.0, 90.0, 55.0))
    reply = Reply.of(result, "smollm2", session="kitchen")
    payload = json.loads(json.dumps(reply.to_payload()))  # as it travels
    assert set(payload) == {"id", "text", "finish_reason", "session", "model", "usage", "timing"}
    assert Reply.from_payload(payload) == reply


def test_error_round_trip() -> None:
    error = ErrorReply.of("r2", RequestError("busy", "the queue is full"))
    payload = error.to_payload()
    assert payload == {"id": "r2", "error": {"code": "busy", "message": "the queue is full"}}
    assert ErrorReply.from_payload(payload) == error
    assert ErrorReply.of(None, None).to_payload()["error"]["code"] == "engine_failure"


def test_stream_chunk_round_trip() -> None:
    chunk = StreamChunk("r3", 0, "Hel")
    assert StreamChunk.from_payload(chunk.to_payload()) == chunk


@pytest.mark.parametrize(
    "payload",
    [{}, {"id": "x", "text": "t"}, {"id": "x", "error": "busy"}, {"usage": None}],
)
def test_malformed_payloads_are_refused(payload: dict[str, object]) -> None:
    for kind in (Reply, ErrorReply, StreamChunk):
        with pytest.raises(ValueError):
            kind.from_payload(payload)
