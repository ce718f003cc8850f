"""The bad-input checklist (reliability.md) against the real service: every item gets the
documented error (or, for floods, the rate limit), the service keeps answering, and
nothing is ever published outside `{base}/` (a subscriber on `#` watches every test)."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from tests.conftest import Broker
from tests.mqtt_helpers import (
    Client,
    Received,
    ServiceProcess,
    final_for,
    finals,
    listening,
    running,
    serving,
    unique,
)


@pytest.fixture(scope="module")
def svc(
    mosquitto: Broker, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    service = ServiceProcess(tmp_path_factory.mktemp("svc"), mosquitto.port, tiny_model_dir)
    yield from serving(service, mosquitto.host, mosquitto.port)


@pytest.fixture
def client(mosquitto: Broker, svc: ServiceProcess) -> Iterator[Client]:
    yield from listening(mosquitto.host, mosquitto.port, f"{svc.base}/reply/#")


@pytest.fixture
def spy(mosquitto: Broker, svc: ServiceProcess) -> Iterator[Client]:
    """Everything published on the broker during the test; checked at the end."""
    c = Client(mosquitto.host, mosquitto.port)
    c.subscribe("#", retained=False)
    yield c
    # A sentinel request: what the service published for the test comes before its reply.
    sentinel = unique("sentinel")
    c.publish(f"{svc.base}/ask", {"id": sentinel, "text": "ok?", "max_tokens": 1})
    c.wait_for(final_for(sentinel))
    outside = [m.topic for m in c.messages() if not owned(svc, m)]
    c.close()
    assert not outside, f"published outside {svc.base}/: {outside[:5]}"


def owned(svc: ServiceProcess, m: Received) -> bool:
    """The service's own topics: under its base, and its discovery config."""
    return m.topic.startswith(f"{svc.base}/") or m.topic == svc.discovery_topic


def error_of(client: Client, request_id: str) -> dict[str, Any]:
    body = client.wait_for(final_for(request_id))[0].json()
    assert set(body) == {"id", "error"}, body
    error = body["error"]
    assert isinstance(error, dict)
    return error


def still_answers(client: Client, base: str, tag: str) -> None:
    rid = unique(f"alive-{tag}")
    client.publish(f"{base}/ask", {"id": rid, "text": "still there?"})
    assert "text" in client.wait_for(final_for(rid))[0].json()


def null_id_errors(client: Client, base: str) -> list[dict[str, Any]]:
    return [b for b in finals(client, base) if b.get("id") is None]


@pytest.mark.parametrize(
    ("payload", "rid", "fragment"),
    [
        ({"id": "t-num", "text": 42}, "t-num", "'text' must be a string"),
        ({"id": "t-mt", "text": "hi", "max_tokens": "16"}, "t-mt", "max_tokens"),
        ({"id": "t-mt0", "text": "hi", "max_tokens": 0}, "t-mt0", "max_tokens"),
        ({"id": "t-bool", "text": "hi", "max_tokens": True}, "t-bool", "max_tokens"),
        ({"id": "t-str", "text": "hi", "stream": "yes"}, "t-str", "stream"),
        ({"id": "t-prio", "text": "hi", "priority": 99}, "t-prio", "priority"),
        ({"id": "t-temp", "text": "hi", "temperature": -1}, "t-temp", "temperature"),
        ({"id": "t-to", "text": "hi", "timeout_s": 0}, "t-to", "timeout_s"),
        ({"id": "t-sess", "text": "hi", "session": "a/b"}, "t-sess", "session"),
        ({"id": "t-empty", "text": ""}, "t-empty", "empty"),
        ({"id": "t-blank", "text": " \n\t "}, "t-blank", "empty"),
        ({"id": "t-none"}, "t-none", "empty"),
        ({"id": "t-long", "text": "x" * 40_000}, "t-long", "longer than"),
    ],
)
def test_wrong_field_types_are_invalid_request_with_the_id(
    svc: ServiceProcess,
    client: Client,
    spy: Client,
    payload: dict[str, Any],
    rid: str,
    fragment: str,
) -> None:
    client.publish(f"{svc.base}/ask", payload)
    error = error_of(client, rid)
    assert error["code"] == "invalid_request"
    assert fragment in error["message"], error


@pytest.mark.parametrize(
    "payload",
    [
        b"\xff\xfe\x00not utf-8",
        b"{\x80}",
        b"[1, 2, 3]",
        b'"just a JSON string"',
        b'{"text": ',
        b'{"text": "hi", "temperature": NaN}',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 30_000 + b"1" + b"}" * 30_000,
        json.dumps({"id": 5, "text": "hi"}).encode(),
        json.dumps({"id": "x" * 65, "text": "hi"}).encode(),
        json.dumps({"id": "bad\u202eid", "text": "hi"}).encode(),
        b"   ",
        b"",
    ],
    ids=[
        "not-utf8",
        "not-utf8-json",
        "list",
        "json-string",
        "truncated",
        "nan",
        "nested-lists",
        "nested-objects",
        "numeric-id",
        "long-id",
        "bidi-id",
        "whitespace",
        "empty",
    ],
)
def test_unreadable_payloads_get_invalid_request_with_null_id(
    svc: ServiceProcess, client: Client, spy: Client, payload: bytes
) -> None:
    client.publish(f"{svc.base}/ask", payload)
    body = client.wait_for(lambda m: m.topic == f"{svc.base}/reply")[0].json()
    assert body["id"] is None
    assert body["error"]["code"] == "invalid_request"
    still_answers(client, svc.base, "unreadable")


def test_number_payload_is_plain_text(svc: ServiceProcess, client: Client) -> None:
    """A payload that does not begin like JSON is the prompt itself (contract.md)."""
    client.publish(f"{svc.base}/ask", b"42")
    body = client.wait_for(lambda m: m.topic == f"{svc.base}/reply")[0].json()
    assert "text" in body and "finish_reason" in body


@pytest.mark.parametrize("size", [300_000, 3_000_000])
def test_huge_payloads_do_not_hurt(
    svc: ServiceProcess, client: Client, spy: Client, size: int
) -> None:
    """Above the 256 KB limit. The service announced a Maximum Packet Size (MQTT 5), so
    the broker drops the packet before it reaches the service: no reply at all (the MQTT
    3.1.1 case, where the service refuses it, is tested below), no crash, no reply
    outside the base, and the next prompt is answered."""
    client.publish(f"{svc.base}/ask", b"x" * size)
    client.publish(f"{svc.base}/ask", json.dumps({"id": "huge", "text": "y" * size}))
    still_answers(client, svc.base, f"huge{size}")  # a sentinel: sent after both
    assert not [b for b in finals(client, svc.base) if b.get("id") in (None, "huge")]
    assert b"Traceback" not in svc.log().encode()


def test_payload_just_under_the_limit_is_read_and_refused_by_text_length(
    svc: ServiceProcess, client: Client
) -> None:
    client.publish(f"{svc.base}/ask", json.dumps({"id": "big-ok", "text": "z" * 200_000}))
    error = error_of(client, "big-ok")
    assert error["code"] == "invalid_request" and "longer than" in error["message"]


def test_prompt_longer_than_the_window(svc: ServiceProcess, client: Client, spy: Client) -> None:
    client.publish(f"{svc.base}/ask", {"id": "too-long", "text": "word " * 3000})
    error = error_of(client, "too-long")
    assert error["code"] == "prompt_too_long"
    numbers = [int(w.replace(",", "")) for w in error["message"].split() if w[:1].isdigit()]
    assert len(numbers) >= 2 and numbers[0] > numbers[1], error  # "N tokens ... window M"
    still_answers(client, svc.base, "too-long")


def test_control_characters_and_bidi_overrides(
    svc: ServiceProcess, client: Client, spy: Client
) -> None:
    nasty = "\u202eevil\u2066 \x1b[2J\x07\x00 end"
    client.publish(f"{svc.base}/ask", {"id": "ctl-1", "text": f"hello {nasty}"})
    assert "text" in client.wait_for(final_for("ctl-1"))[0].json()
    client.publish(f"{svc.base}/ask", {"id": "ctl-2", "text": "hi", "reply_to": f"x/{nasty}"})
    assert error_of(client, "ctl-2")["code"] == "forbidden_reply_topic"
    # (C0 controls in a topic name make Mosquitto drop the publisher: bidi only here.)
    client.publish(f"{svc.base}/ask/\u202ekitchen\u2066", "hello")
    body = client.wait_for(lambda m: m.topic == f"{svc.base}/reply" and b'"id": null' in m.payload)[
        0
    ].json()
    assert body["error"]["code"] == "invalid_request"
    log = svc.log()  # the refusal is logged before its reply is published
    for ch in ("\u202e", "\u2066", "\x1b", "\x07", "\x00"):
        assert ch not in log, f"{ch!r} reached the log"


def forbidden_targets(base: str) -> list[str]:
    return [
        "#",
        "+",
        f"{base}/+/x",
        f"{base}/reply/#",
        "nul\x00topic",
        f"{base}/reply/nul\x00",
        f"{base}/" + "a" * 70_000,
        "$SYS/x",
        f"${base}/reply",
        "homeassistant/x",
        "homeassistant/device/evil/config",
        "zigbee2mqtt/x/set",
        f"{base}/ask",
        f"{base}/ask/kitchen",
        f"{base}/cancel",
        f"{base}/status",
        f"{base}/info",
        f"{base}/telemetry",
        base,
        f"{base}x/reply",
        "",
    ]


def test_forbidden_reply_to(svc: ServiceProcess, client: Client, spy: Client) -> None:
    targets = forbidden_targets(svc.base)
    for n, target in enumerate(targets):
        client.publish(
            f"{svc.base}/ask/kitchen",
            {"id": f"fb-{n}", "text": "hi", "reply_to": target, "stream": True},
        )
    for n, target in enumerate(targets):
        reply = client.wait_for(final_for(f"fb-{n}"))[0]
        assert reply.topic == f"{svc.base}/reply", target[:40]
        assert reply.json()["error"]["code"] == "forbidden_reply_topic", target[:40]
    # Nothing ran: no stream chunks anywhere, exactly one answer each.
    assert not client.messages(lambda m: m.topic.endswith("/stream"))
    counts = Counter(b["id"] for b in finals(client, svc.base))
    assert all(counts[f"fb-{n}"] == 1 for n in range(len(targets)))


def test_forbidden_mqtt5_response_topic(svc: ServiceProcess, client: Client, spy: Client) -> None:
    targets = [t for t in forbidden_targets(svc.base) if "\x00" not in t and len(t) < 60_000 and t]
    for n, target in enumerate(targets):
        client.publish(
            f"{svc.base}/ask",
            {"id": f"rt-{n}", "text": "hi", "reply_to": f"{svc.base}/reply/ok"},
            response_topic=target,
            correlation_data=b"corr",
        )
    for n, target in enumerate(targets):
        reply = client.wait_for(final_for(f"rt-{n}"))[0]
        assert reply.topic == f"{svc.base}/reply", target
        assert reply.correlation_data == b"corr"
        assert reply.json()["error"]["code"] == "forbidden_reply_topic"
    assert not client.messages(f"{svc.base}/reply/ok")


def test_duplicate_ids_are_answered_once(svc: ServiceProcess, client: Client, spy: Client) -> None:
    for _ in range(3):
        client.publish(f"{svc.base}/ask", {"id": "dup-1", "text": "once please"})
    client.wait_for(final_for("dup-1"))
    client.publish(f"{svc.base}/ask", {"id": "dup-1", "text": "and again later"})
    still_answers(client, svc.base, "dup")
    assert len(client.messages(final_for("dup-1"))) == 1


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_retained_prompts_never_run(
    mosquitto: Broker, tiny_model_dir: Path, tmp_path: Path, protocol: str
) -> None:
    service = ServiceProcess(
        tmp_path, mosquitto.port, tiny_model_dir, config={"mqtt": {"protocol": protocol}}
    )
    c = Client(mosquitto.host, mosquitto.port)
    try:
        c.subscribe(f"{service.base}/reply/#", f"{service.base}/telemetry", retained=False)
        c.publish(f"{service.base}/ask", {"id": "ret-1", "text": "retained!"}, retain=True)
        c.publish(f"{service.base}/ask/porch", {"id": "ret-2", "text": "also"}, retain=True)
        with running(service, c):
            c.publish(f"{service.base}/ask", {"id": "live", "text": "hi"})
            c.wait_for(final_for("live"))
            answered = time.monotonic()
            # A retained prompt would have reached the service before "live" (at subscribe)
            # and been submitted first: telemetry published after live's reply counts one.
            telemetry = c.wait_for(
                lambda m: m.topic == f"{service.base}/telemetry" and m.at > answered
            )[0].json()
            assert telemetry["requests_total"] == 1, telemetry
            assert not c.messages(final_for("ret-1"))
            assert not c.messages(final_for("ret-2"))
    finally:
        c.publish(f"{service.base}/ask", b"", retain=True)  # clear the retained prompts
        c.publish(f"{service.base}/ask/porch", b"", retain=True)
        c.close()


def test_flood_from_one_source_is_rate_limited(
    mosquitto: Broker, tiny_model_dir: Path, tmp_path: Path
) -> None:
    service = ServiceProcess(
        tmp_path,
        mosquitto.port,
        tiny_model_dir,
        config={"scheduler": {"rate_limit_per_source": 6}},  # a burst of 3, then 1 per 10 s
    )
    c = Client(mosquitto.host, mosquitto.port)
    flood = 60
    try:
        c.subscribe(f"{service.base}/reply/#", retained=False)
        with running(service, c):
            for i in range(flood):
                c.publish(f"{service.base}/ask/spam", {"id": f"f{i}", "text": "hi"}, wait=False)
                if i == flood // 2:
                    c.publish(f"{service.base}/ask/calm", {"id": "calm", "text": "hi"}, wait=False)
            calm = c.wait_for(final_for("calm"))[0]
            assert "text" in calm.json(), calm.json()
            got = c.wait_for(lambda m: m.topic == f"{service.base}/reply/spam", flood)
            # A sentinel from the same source, refused at once: any second reply to the
            # flood would come before its own.
            c.publish(f"{service.base}/ask/spam", {"id": "sentinel", "text": "hi"})
            c.wait_for(final_for("sentinel"))
            assert len(c.messages(f"{service.base}/reply/spam")) == flood + 1  # one each
            outcome = Counter(
                m.json()["error"]["code"] if "error" in m.json() else "ok" for m in got
            )
            assert set(outcome) <= {"ok", "busy"}
            assert 3 <= outcome["ok"] <= 5 and outcome["busy"] >= flood - 5, outcome
            assert sorted(m.json()["id"] for m in got) == sorted(f"f{i}" for i in range(flood))
            # A refused request never ran: retrying its id (from a source with tokens left)
            # runs it; retrying an answered id does not.
            busy = next(m.json()["id"] for m in got if "error" in m.json())
            done = next(m.json()["id"] for m in got if "error" not in m.json())
            c.publish(f"{service.base}/ask/retry", {"id": done, "text": "again"})
            c.publish(f"{service.base}/ask/retry", {"id": busy, "text": "again"})
            retried = c.wait_for(lambda m: m.topic == f"{service.base}/reply/retry")[0].json()
            assert retried["id"] == busy and "text" in retried, retried
            # The answered id was dropped on arrival, before the busy one even arrived.
            assert f"request {done} was already received: not run twice" in service.log()
            assert len(c.messages(f"{service.base}/reply/retry")) == 1
    finally:
        c.close()


def test_mqtt_311_service_ignores_huge_payloads(
    mosquitto: Broker, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """MQTT 3.1.1 has no Maximum Packet Size: the payload arrives and the size check
    refuses it before decoding."""
    service = ServiceProcess(
        tmp_path, mosquitto.port, tiny_model_dir, config={"mqtt": {"protocol": "3.1.1"}}
    )
    c = Client(mosquitto.host, mosquitto.port, protocol=mqtt.MQTTv311)
    try:
        c.subscribe(f"{service.base}/reply/#")
        with running(service, c):
            c.publish(f"{service.base}/ask", json.dumps({"id": "big", "text": "y" * 2_000_000}))
            body = c.wait_for(lambda m: m.topic == f"{service.base}/reply")[0].json()
            assert body["id"] is None  # refused before decoding: the id was never read
            assert body["error"]["code"] == "invalid_request"
            assert "limit" in body["error"]["message"]
            still_answers(c, service.base, "v3")
    finally:
        c.close()
