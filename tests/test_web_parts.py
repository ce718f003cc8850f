"""The page's parts that need no service: plot points from the telemetry payload, the
kept hour, the recent-requests log and its privacy rule, the try-it body, the listener
rule. The page itself, in a browser against the real service: tests/test_web_page.py."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from assistant.config import WebConfig
from assistant.core.events import Finished, GenerationResult, Timing, Usage
from assistant.core.request import Message, Request
from assistant.errors import RequestError
from assistant.web.app import INGRESS_PEER, INGRESS_PEER_ENV, listener_for
from assistant.web.history import SERIES, History, point_from_telemetry
from assistant.web.requests_log import RequestLog
from assistant.web.tryit import DEMO_TOOLS, MAX_TEXT, TryBodyError, TryStream, parse_try


def payload(**overrides: Any) -> dict[str, Any]:
    """A telemetry payload's plotted fields (contract.md "Telemetry fields"); the page
    against the real service's payload: tests/test_web_page.py."""
    fields: dict[str, Any] = {
        "cpu_percent": 37.5,
        "memory": {"available_mb": 3000, "total_mb": 4000},
        "memory_available_mb": 3000,
        "worker_rss_mb": 321.5,
        "cpu_temp_c": None,
        "queue_depth": 3,
        "tokens_per_s": 12.3,
    }
    return {**fields, **overrides}


def test_a_point_carries_every_plotted_series_from_the_telemetry_payload() -> None:
    data = payload()
    point = point_from_telemetry(data, 1000.0)
    assert set(point) == {"t", *SERIES}
    assert point["t"] == 1000.0
    memory = data["memory"]
    assert point["memory_used_mb"] == memory["total_mb"] - memory["available_mb"] == 1000
    assert point["cpu_percent"] == 37.5 and point["worker_rss_mb"] == 321.5
    assert point["queue_depth"] == 3.0 and point["tokens_per_s"] == 12.3
    assert point["cpu_temp_c"] is None  # no sensor: a gap, and the page says so
    assert point_from_telemetry({**data, "cpu_temp_c": 51}, 1.0)["cpu_temp_c"] == 51.0
    assert point_from_telemetry({**data, "worker_rss_mb": None}, 1.0)["worker_rss_mb"] is None


def test_history_keeps_the_last_hour_and_feeds_subscribers() -> None:
    clock = iter(float(t) for t in range(100))
    history = History(payload, period_s=1.0, keep_s=3.0, clock=lambda: next(clock))

    async def scenario() -> list[float | None]:
        with history.subscribe() as queue:
            for _ in range(5):
                history.take()
            points = [queue.get_nowait() for _ in range(queue.qsize())]
            return [p["t"] for p in points if p is not None]

    seen = asyncio.run(scenario())
    assert seen == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert history.columns()["t"] == [2.0, 3.0, 4.0]  # only keep_s / period_s points
    assert history.subscribers == 0


def test_a_stalled_subscriber_misses_points_instead_of_growing() -> None:
    history = History(payload, period_s=1.0, keep_s=10_000.0)

    async def scenario() -> int:
        with history.subscribe() as queue:
            for _ in range(100):
                history.take()
            return queue.qsize()

    assert asyncio.run(scenario()) == 30  # SUBSCRIBER_BACKLOG
    assert len(history.columns()["t"]) == 100


def finished(rid: str, reason: str = "stop", *, busy: bool = False) -> Finished:
    if busy:
        return Finished(rid, error=RequestError("busy", "full"))
    timing = Timing(queued_ms=1.0, first_token_ms=20.0, total_ms=123.45, tokens_per_s=40.04)
    return Finished(rid, GenerationResult(rid, "hi", reason, Usage(5, 7), timing))


def test_the_log_is_bounded_newest_first_and_keeps_no_prompt_by_default() -> None:
    log = RequestLog(size=3)
    for i in range(5):
        log.record(
            Request(id=f"r{i}", front_end="mqtt", client="c", text="secret"), finished(f"r{i}")
        )
    entries = log.entries()
    assert [e["id"] for e in entries] == ["r4", "r3", "r2"]
    assert entries[0]["front_end"] == "mqtt"
    assert entries[0]["latency_ms"] == 123.5 and entries[0]["tokens_per_s"] == 40.0
    assert entries[0]["finish_reason"] == "stop" and entries[0]["error_code"] is None
    assert all(e["prompt"] is None for e in entries)
    assert "secret" not in repr(log.entries())


def test_the_log_keeps_a_cut_prompt_only_when_asked() -> None:
    log = RequestLog(keep_prompts=True)
    chat = (Message("system", "sys"), Message("user", "first"), Message("user", "x" * 1000))
    log.record(Request(id="a", front_end="http", client="c", messages=chat), finished("a"))
    spoken = Request(id="b", front_end="wyoming", client="c", text="hello")
    log.record(spoken, finished("b", busy=True))
    newest, oldest = log.entries()
    assert oldest["prompt"] == "x" * 300
    assert newest["prompt"] == "hello"
    assert newest["error_code"] == "busy" and newest["finish_reason"] is None
    assert newest["latency_ms"] is None


def test_try_body_is_validated() -> None:
    request = parse_try({"text": "hello", "max_tokens": 8, "tools": True}, "172.30.32.2")
    assert request.front_end == "page" and request.client == "page:172.30.32.2"
    assert request.text == "hello" and request.max_tokens == 8
    assert request.tools == DEMO_TOOLS
    assert parse_try({"text": "hi"}, "x").tools == ()
    bad: object
    for bad in (
        [],
        {},
        {"text": ""},
        {"text": "   "},
        {"text": 5},
        {"text": "x" * (MAX_TEXT + 1)},
        {"text": "hi", "max_tokens": 0},
        {"text": "hi", "max_tokens": True},
        {"text": "hi", "max_tokens": "8"},
        {"text": "hi", "tools": "yes"},
    ):
        with pytest.raises(TryBodyError):
            parse_try(bad, "x")


def test_the_listener_answers_only_the_ingress_proxy_in_an_addon() -> None:
    config = WebConfig()
    outside = listener_for(config, {})
    assert (outside.host, outside.port, outside.only_peer) == ("127.0.0.1", 8099, None)
    addon = listener_for(config, {"SUPERVISOR_TOKEN": "t"})
    assert (addon.host, addon.port, addon.only_peer) == ("0.0.0.0", 8099, INGRESS_PEER)
    assert INGRESS_PEER == "172.30.32.2"
    moved = listener_for(config, {"SUPERVISOR_TOKEN": "t", INGRESS_PEER_ENV: "127.0.0.2"})
    assert moved.only_peer == "127.0.0.2"


def test_closing_ends_every_subscription() -> None:
    history = History(payload)

    async def scenario() -> list[object]:
        with history.subscribe() as first, history.subscribe() as second:
            history.take()
            history.close()  # the server stops: open event streams end
            return [await first.get(), await second.get()]

    assert asyncio.run(scenario()) == [None, None]


def lines_of(chunks: list[bytes]) -> list[dict[str, Any]]:
    return [json.loads(chunk) for chunk in chunks]


def test_try_stream_shows_each_tool_call_when_its_tag_closes() -> None:
    stream = TryStream(DEMO_TOOLS)
    call = '<tool_call>{"name": "HassTurnOn", "arguments": {"name": "Kitchen"}}</tool_call>'
    pieces = ["Sure. ", "<tool_", call[len("<tool_") : 40], call[40:], " done"]
    seen = [lines_of(stream.delta(piece)) for piece in pieces]
    assert seen[0] == [{"type": "delta", "text": "Sure. "}]
    assert seen[1] == [] and seen[2] == []  # a tag in the making is held back
    assert seen[3] == [
        {"type": "tool_call", "name": "HassTurnOn", "arguments": {"name": "Kitchen"}}
    ]  # as it happens: before the final
    assert seen[4] == []  # after a call, nothing more is streamed as text
    text = "".join(pieces)
    timing = Timing(queued_ms=0.0, first_token_ms=1.0, total_ms=2.0, tokens_per_s=3.0)
    done = Finished("r", GenerationResult("r", text, "stop", Usage(1, 2), timing))
    final = lines_of(stream.final(done))
    assert [line["type"] for line in final] == ["final"]  # the call is not shown twice
    assert final[0]["finish_reason"] == "tool_calls"


def test_try_stream_without_tools_passes_text_through() -> None:
    stream = TryStream(())
    assert lines_of(stream.delta("<tool_call>x")) == [{"type": "delta", "text": "<tool_call>x"}]
    final = lines_of(stream.final(Finished("r", error=RequestError("busy", "full"))))
    assert final == [
        {
            "type": "final",
            "id": "r",
            "finish_reason": None,
            "error": {"code": "busy", "message": "full"},
        }
    ]
