"""Faults around the real service: connection resets, a dead link, a stopped service, a
late broker, worker deaths, two load-balanced instances and SIGTERM mid-work. In every
case each request id gets exactly one final message."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Broker, free_port, start_mosquitto
from tests.mqtt_helpers import (
    Client,
    Received,
    ServiceProcess,
    final_for,
    finals,
    running,
    unique,
)
from tests.tcp_proxy import TcpProxy


def final_counts(client: Client, base: str) -> Counter[str]:
    return Counter(str(b["id"]) for b in finals(client, base) if b.get("id") is not None)


def wait_all_answered(
    client: Client, base: str, wanted: list[str], timeout: float = 60.0, *, sentinel: bool = True
) -> Counter[str]:
    """Until every id in `wanted` has a final; then, with `sentinel`, until the final of a
    request sent after them, which a duplicate of theirs would precede."""
    missing = set(wanted)
    seen = 0

    def answered(messages: list[Received]) -> bool:
        nonlocal seen  # each message is looked at once
        for m in messages[seen:]:
            if m.topic.startswith(f"{base}/reply") and not m.topic.endswith("/stream"):
                body = m.json()
                missing.discard(str(body.get("id")) if isinstance(body, dict) else "")
        seen = len(messages)
        return not missing

    client.wait_until(answered, timeout)
    if sentinel:
        marker = unique("sentinel")
        client.publish(f"{base}/ask", {"id": marker, "text": "ok?", "max_tokens": 1})
        client.wait_for(final_for(marker), timeout=timeout)
    counts = final_counts(client, base)
    counts.pop(marker if sentinel else "", None)
    missing = set(wanted) - set(counts)
    assert not missing, (
        f"{len(missing)} of {len(wanted)} never answered, e.g. {sorted(missing)[:5]}"
    )
    return counts


def telemetry_of(base: str, instance: str, after: float) -> Callable[[Received], bool]:
    """Telemetry of one instance received after `after` (published after its replies)."""

    def test(m: Received) -> bool:
        mine = m.topic == f"{base}/telemetry" and m.json().get("instance") == instance
        return mine and m.at > after

    return test


def outcomes(client: Client, base: str) -> Counter[str]:
    return Counter(
        b["error"]["code"] if "error" in b else b["finish_reason"] for b in finals(client, base)
    )


@pytest.fixture
def proxy(mosquitto: Broker) -> Iterator[TcpProxy]:
    with TcpProxy(mosquitto.host, mosquitto.port) as p:
        yield p


def test_resets_lose_nothing_and_run_nothing_twice(
    mosquitto: Broker, tiny_model_dir: Path, tmp_path: Path, proxy: TcpProxy
) -> None:
    service = ServiceProcess(
        tmp_path,
        proxy.port,
        tiny_model_dir,
        # A queue that holds a whole reconnect's backlog: every prompt must really run.
        config={"engine": {"max_tokens": 4}, "scheduler": {"queue_size": 1000}},
    )
    c = Client(mosquitto.host, mosquitto.port)  # the device talks to the broker directly
    total, resets = 500, 5
    sent = [f"p{i}" for i in range(total)]
    try:
        c.subscribe(f"{service.base}/reply/#", f"{service.base}/telemetry", retained=False)
        with running(service, c):
            per_round = total // resets
            for r in range(resets):
                for rid in sent[r * per_round : (r + 1) * per_round]:
                    c.publish(f"{service.base}/ask", {"id": rid, "text": "hi"}, wait=False)
                    time.sleep(0.002)
                deadline = time.monotonic() + 15  # paho waits >= 1 s before reconnecting
                while proxy.open_connections == 0 and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert proxy.reset() >= 1
            counts = wait_all_answered(c, service.base, sent)
            answered = time.monotonic()
            # A reply in flight when the link died is sent again after the reconnect (QoS 1
            # is at-least-once): the copies are byte-identical, the request ran once.
            for rid, n in counts.items():
                if n > 1:
                    copies = {m.payload for m in c.messages(final_for(rid))}
                    assert len(copies) == 1, f"{rid} answered {n} times differently"
            print("wire duplicates of replies:", sum(n - 1 for n in counts.values()))
            assert proxy.resets >= resets
            ok = outcomes(c, service.base)
            assert set(ok) <= {"stop", "length"}, ok  # every one ran, none failed
            # The worker really ran each prompt once: requests_total counts submissions.
            # (Telemetry published after the last reply, the sentinel's, counts it too.)
            telemetry = c.wait_for(telemetry_of(service.base, service.client_id, answered))
            requests_total = telemetry[0].json()["requests_total"]
            assert requests_total == total + 1, requests_total
            assert telemetry[0].json()["mqtt_connects"] >= 2
    finally:
        c.close()


def test_dead_link_found_by_keepalive(
    mosquitto: Broker, tiny_model_dir: Path, tmp_path: Path, proxy: TcpProxy
) -> None:
    keepalive = 5
    service = ServiceProcess(
        tmp_path, proxy.port, tiny_model_dir, config={"mqtt": {"keepalive_s": keepalive}}
    )
    c = Client(mosquitto.host, mosquitto.port)
    try:
        c.subscribe(f"{service.base}/reply/#", retained=False)
        with running(service, c):
            proxy.set_mode("blackhole")
            sent = [f"b{i}" for i in range(20)]
            for rid in sent:
                c.publish(f"{service.base}/ask", {"id": rid, "text": "hi"})
            deadline = time.monotonic() + keepalive * 3
            while "disconnected" not in service.log() and time.monotonic() < deadline:
                time.sleep(0.2)
            assert "disconnected" in service.log()  # paho's keepalive noticed the dead link
            proxy.set_mode("pass")
            proxy.reset()
            counts = wait_all_answered(c, service.base, sent)
            assert set(counts.values()) == {1}
    finally:
        c.close()


def test_prompts_sent_while_stopped_are_answered_after_restart(
    mosquitto: Broker, tiny_model_dir: Path, tmp_path: Path
) -> None:
    service = ServiceProcess(tmp_path, mosquitto.port, tiny_model_dir)
    c = Client(mosquitto.host, mosquitto.port)
    sent = [f"q{i}" for i in range(100)]
    try:
        c.subscribe(f"{service.base}/reply/#", f"{service.base}/status", retained=False)
        with running(service, c):
            pass  # connected once: the broker now keeps its session
        assert service.wait(15) == 0
        c.wait_for(lambda m: m.topic == f"{service.base}/status" and m.payload == b"offline")
        for rid in sent:
            c.publish(f"{service.base}/ask", {"id": rid, "text": "hi"})
        assert not finals(c, service.base)
        with running(service, c):
            counts = wait_all_answered(c, service.base, sent)
            assert set(counts.values()) == {1}
    finally:
        c.close()


def test_broker_that_starts_late(tiny_model_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    service = ServiceProcess(tmp_path / "svc", port, tiny_model_dir)
    service.start()
    broker = None
    try:
        time.sleep(5)
        assert service.process is not None and service.process.poll() is None
        (tmp_path / "broker").mkdir()
        broker = start_mosquitto(tmp_path / "broker", port)
        c = Client("127.0.0.1", port)
        try:
            c.subscribe(f"{service.base}/reply/#", f"{service.base}/status")
            status = c.wait_for(f"{service.base}/status", timeout=20)[-1]
            if status.payload != b"online":
                c.wait_for(lambda m: m.topic == f"{service.base}/status" and m.payload == b"online")
            sent = [f"l{i}" for i in range(20)]
            for rid in sent:
                c.publish(f"{service.base}/ask", {"id": rid, "text": "hi"})
            counts = wait_all_answered(c, service.base, sent)
            assert set(counts.values()) == {1}
        finally:
            c.close()
    finally:
        service.stop()
        if broker is not None:
            broker.terminate()
            broker.wait(10)


def test_prompts_while_the_worker_restarts(
    mosquitto: Broker, tiny_model_dir: Path, tmp_path: Path
) -> None:
    service = ServiceProcess(
        tmp_path, mosquitto.port, tiny_model_dir, config={"engine": {"max_tokens": 64}}
    )
    c = Client(mosquitto.host, mosquitto.port)
    sent = [f"w{i}" for i in range(150)]
    kills: list[int] = []
    try:
        c.subscribe(f"{service.base}/reply/#", retained=False)
        with running(service, c):
            stop = threading.Event()

            def killer() -> None:
                while not stop.wait(1.0):
                    for pid in service.worker_pids():
                        try:
                            os.kill(pid, signal.SIGKILL)
                            kills.append(pid)
                        except ProcessLookupError:
                            pass

            thread = threading.Thread(target=killer)
            thread.start()
            try:
                for rid in sent:
                    c.publish(f"{service.base}/ask", {"id": rid, "text": "hi"}, wait=False)
                    time.sleep(0.03)
            finally:
                stop.set()
                thread.join()
            counts = wait_all_answered(c, service.base, sent)
            assert set(counts.values()) == {1}
            assert len(set(kills)) >= 3
            ok = outcomes(c, service.base)
            # A prompt that was running when its worker died is retried once; one that
            # waited while the worker restarted may find the queue full (busy).
            assert set(ok) <= {"stop", "length", "engine_failure", "busy"}, ok
            assert ok["stop"] + ok["length"] > len(sent) // 2, ok
            # And it still works once the killing stops.
            c.publish(f"{service.base}/ask", {"id": "after", "text": "hi"})
            assert wait_all_answered(c, service.base, ["after"])["after"] == 1
    finally:
        c.close()


def test_shared_group_balances_two_instances(
    mosquitto: Broker, tiny_model_dir: Path, tmp_path: Path
) -> None:
    base = unique("shared")
    config: dict[str, Any] = {"mqtt": {"shared_group": "pool"}}
    one = ServiceProcess(tmp_path / "a", mosquitto.port, tiny_model_dir, base=base, config=config)
    two = ServiceProcess(tmp_path / "b", mosquitto.port, tiny_model_dir, base=base, config=config)
    c = Client(mosquitto.host, mosquitto.port)
    sent = [f"s{i}" for i in range(200)]
    try:
        c.subscribe(f"{base}/reply/#", f"{base}/telemetry", retained=False)
        with running(one, c), running(two, c):
            for rid in sent:
                c.publish(f"{base}/ask", {"id": rid, "text": "hi"}, wait=False)
                time.sleep(0.003)
            # A shared sentinel reaches one instance only: each instance's next telemetry,
            # published after its replies, is the marker instead.
            wait_all_answered(c, base, sent, sentinel=False)
            answered = time.monotonic()
            latest: dict[str, int] = {}
            for instance in (one.client_id, two.client_id):
                body = c.wait_for(telemetry_of(base, instance, answered))[0].json()
                latest[instance] = body["requests_total"]
            assert set(final_counts(c, base).values()) == {1}
            assert set(latest) == {one.client_id, two.client_id}
            assert sum(latest.values()) == len(sent), latest
            assert min(latest.values()) > 0, latest  # both instances took prompts
    finally:
        c.close()


def test_sigterm_with_requests_in_flight(
    mosquitto: Broker, tiny_model_dir: Path, tmp_path: Path
) -> None:
    service = ServiceProcess(
        tmp_path,
        mosquitto.port,
        tiny_model_dir,
        config={"engine": {"max_tokens": 1000, "context_tokens": 2048, "max_batch": 2}},
    )
    c = Client(mosquitto.host, mosquitto.port)
    sent = [f"t{i}" for i in range(40)]
    try:
        c.subscribe(f"{service.base}/reply/#", f"{service.base}/status", retained=False)
        with running(service, c):
            for rid in sent:
                c.publish(
                    f"{service.base}/ask", {"id": rid, "text": "hi", "temperature": 0}, wait=False
                )
            c.wait_for(lambda m: m.topic.startswith(f"{service.base}/reply"))
            service.signal(signal.SIGTERM)
            # Prompts that arrive during the shutdown are refused, with their id.
            for rid in ("late1", "late2"):
                c.publish(f"{service.base}/ask", {"id": rid, "text": "hi"}, wait=False)
            assert service.wait(30) == 0
            c.wait_for(lambda m: m.topic == f"{service.base}/status" and m.payload == b"offline")
        # The service published "offline" after every reply: nothing more can come.
        counts = wait_all_answered(c, service.base, sent, timeout=5, sentinel=False)
        assert set(counts.values()) == {1}
        ok = outcomes(c, service.base)
        assert ok["shutting_down"] >= 1, ok  # some were still queued
        assert set(ok) <= {"stop", "length", "shutting_down", "cancelled"}, ok
        assert not [b for b in finals(c, service.base) if b.get("id") is None]
    finally:
        c.close()
