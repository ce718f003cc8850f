"""Conversation sessions: the store directly (a fake clock), then the real service, where
the history shows in `usage.prompt_tokens` (greedy decoding makes it repeatable)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from assistant.config import SessionsConfig
from assistant.core.prompt import chat
from assistant.core.request import Message, Request
from assistant.core.sessions import SessionStore, Turn, session_key
from assistant.mqtt.topics import Topics
from tests.conftest import Broker
from tests.mqtt_helpers import (
    Client,
    ServiceProcess,
    final_for,
    listening,
    serving,
    unique,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def store(
    idle_s: float = 60, max_sessions: int = 3, max_turns: int = 2, max_chars: int | None = None
) -> tuple[SessionStore, Clock]:
    clock = Clock()
    config = SessionsConfig(idle_s=idle_s, max_sessions=max_sessions, max_turns=max_turns)
    return SessionStore(config, max_chars, clock), clock


def test_turns_are_kept_in_order_and_trimmed_to_max_turns() -> None:
    sessions, _ = store(max_turns=2)
    for n in range(4):
        sessions.append("kitchen", f"q{n}", f"a{n}")
    assert sessions.history("kitchen") == (Turn("q2", "a2"), Turn("q3", "a3"))


def test_unknown_or_no_key_has_no_history() -> None:
    sessions, _ = store()
    assert sessions.history("nobody") == ()
    assert sessions.history(None) == ()


def test_sessions_are_isolated() -> None:
    sessions, _ = store()
    sessions.append("a", "qa", "aa")
    sessions.append("b", "qb", "ab")
    assert sessions.history("a") == (Turn("qa", "aa"),)
    assert sessions.history("b") == (Turn("qb", "ab"),)


def test_idle_sessions_expire() -> None:
    sessions, clock = store(idle_s=10)
    sessions.append("old", "q", "a")
    clock.now += 6
    sessions.append("young", "q", "a")
    clock.now += 5  # old: 11 s idle, young: 5 s
    assert "old" not in sessions
    assert sessions.history("young") == (Turn("q", "a"),)
    assert len(sessions) == 1


def test_reading_a_session_keeps_it_alive() -> None:
    sessions, clock = store(idle_s=10)
    sessions.append("s", "q", "a")
    clock.now += 9
    assert sessions.history("s")
    clock.now += 9
    assert sessions.history("s")


def test_least_recently_used_is_evicted_beyond_max_sessions() -> None:
    sessions, clock = store(max_sessions=2)
    sessions.append("a", "q", "a")
    clock.now += 1
    sessions.append("b", "q", "a")
    clock.now += 1
    sessions.history("a")  # a is now the most recently used
    sessions.append("c", "q", "a")
    assert "b" not in sessions
    assert "a" in sessions and "c" in sessions
    assert len(sessions) == 2


def test_reset_forgets_one_session() -> None:
    sessions, _ = store()
    sessions.append("a", "q", "a")
    sessions.append("b", "q", "a")
    assert sessions.reset("a")
    assert not sessions.reset("a")
    assert sessions.history("a") == ()
    assert sessions.history("b")


def test_character_budget_drops_the_oldest_turns_but_keeps_the_last() -> None:
    sessions, _ = store(max_turns=10, max_chars=10)
    sessions.append("s", "12345", "123")
    sessions.append("s", "1234", "12")
    assert sessions.history("s") == (Turn("1234", "12"),)
    sessions.append("s", "x" * 50, "y")  # too long on its own: still the one turn kept
    assert sessions.history("s") == (Turn("x" * 50, "y"),)


def test_messages_put_the_system_prompt_first_and_the_new_text_last() -> None:
    history = (Turn("q1", "a1"), Turn("q2", "a2"))
    assert chat(Request("r", "mqtt", "", "q3"), "sys", history) == (
        ("system", "sys"),
        ("user", "q1"),
        ("assistant", "a1"),
        ("user", "q2"),
        ("assistant", "a2"),
        ("user", "q3"),
    )
    assert chat(Request("r", "mqtt", "", "q"), "", ()) == (("user", "q"),)
    # A request's own system prompt replaces the configured one.
    own = Request("r", "mqtt", "", "q", system="own")
    assert chat(own, "sys") == (("system", "own"), ("user", "q"))


def test_a_whole_chat_gets_the_system_prompt_only_when_it_has_none() -> None:
    turns = (Message("user", "q1"), Message("assistant", "a1"), Message("user", "q2"))
    request = Request("r", "http", "", messages=turns)
    assert chat(request, "sys") == (
        ("system", "sys"),
        ("user", "q1"),
        ("assistant", "a1"),
        ("user", "q2"),
    )
    with_system = Request("r", "http", "", messages=(Message("system", "mine"), *turns))
    assert chat(with_system, "sys")[0] == ("system", "mine")


@pytest.mark.parametrize("raw", ["kitchen", "default", "01HS6SP2XD1E5HEHVDZE8R2WMR", "a" * 64])
def test_valid_ids_are_their_own_session_key(raw: str) -> None:
    assert session_key(raw) == raw


@pytest.mark.parametrize("raw", ["living room", "a" * 65, "", "satellite/1", "küche"])
def test_other_ids_get_a_stable_valid_key(raw: str) -> None:
    key = session_key(raw)
    assert key == session_key(raw) and key != raw
    assert Topics("b").reply_topic_problem(f"b/{key}") is None and len(key) <= 64


def test_reset_topic_parsing() -> None:
    topics = Topics("ea")
    assert topics.session_reset == "ea/session/+/reset"
    assert topics.session_of_reset("ea/session/kitchen/reset") == "kitchen"
    assert topics.session_of_reset("ea/session/a/b/reset") is None
    assert topics.session_of_reset("ea/session/kitchen") is None
    assert topics.session_of_reset("ea/ask/kitchen") is None
    # A reply must never land on a reset topic (it would wipe a conversation).
    assert topics.reply_topic_problem("ea/session/kitchen/reset") is not None


def test_reset_reaches_every_instance_of_a_shared_group() -> None:
    subscriptions = Topics("ea", shared_group="g").subscriptions()
    assert "ea/session/+/reset" in subscriptions
    assert "$share/g/ea/ask" in subscriptions


# --- the real service (idle expiry is tested on the core's clock, tests/test_core.py) ------


@pytest.fixture(scope="module")
def svc(
    mosquitto: Broker, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    service = ServiceProcess(
        tmp_path_factory.mktemp("sessions"),
        mosquitto.port,
        tiny_model_dir,
        config={"sessions": {"max_sessions": 3, "max_turns": 2}},
    )
    yield from serving(service, mosquitto.host, mosquitto.port)


@pytest.fixture
def client(mosquitto: Broker, svc: ServiceProcess) -> Iterator[Client]:
    yield from listening(mosquitto.host, mosquitto.port, f"{svc.base}/reply/#")


def ask(client: Client, svc: ServiceProcess, session: str | None, **extra: Any) -> dict[str, Any]:
    """One greedy turn; its final reply body."""
    rid = unique("r")
    request: dict[str, Any] = {"id": rid, "text": "hello there", "temperature": 0, "max_tokens": 4}
    if session is not None:
        request["session"] = session
    client.publish(f"{svc.base}/ask", {**request, **extra})
    body: dict[str, Any] = client.wait_for(final_for(rid))[0].json()
    assert "error" not in body, body
    return body


def prompt_tokens(body: dict[str, Any]) -> int:
    return int(body["usage"]["prompt_tokens"])


def test_history_is_shared_and_trimmed_to_max_turns(svc: ServiceProcess, client: Client) -> None:
    key = unique("s")
    # One-token answers keep every turn about the same size (the random tiny model's
    # longer answers retokenize to varying lengths).
    sizes = [prompt_tokens(ask(client, svc, key, max_tokens=1)) for _ in range(5)]
    assert sizes[0] == prompt_tokens(ask(client, svc, None, max_tokens=1))  # no history yet
    turn = sizes[1] - sizes[0]
    assert turn > 5 and sizes[2] - sizes[1] > 5, sizes  # one turn, then two
    # max_turns = 2: from the third request on, the prompt holds two turns and stops
    # growing (it would grow by a turn each time without the limit).
    assert all(abs(size - sizes[2]) <= 2 for size in sizes[3:]), sizes


def test_the_session_is_echoed_and_a_source_is_the_default_key(
    svc: ServiceProcess, client: Client
) -> None:
    source = unique("sat")
    for n in (1, 2):  # one after the other: a turn joins the history when it is answered
        client.publish(f"{svc.base}/ask/{source}", f"hello number {n}")
        client.wait_for(f"{svc.base}/reply/{source}", count=n)
    bodies = [r.json() for r in client.messages(f"{svc.base}/reply/{source}")]
    assert [b["session"] for b in bodies] == [source, source]
    assert prompt_tokens(bodies[0]) < prompt_tokens(bodies[1])


def test_service_keeps_sessions_apart(svc: ServiceProcess, client: Client) -> None:
    a, b = unique("a"), unique("b")
    fresh = prompt_tokens(ask(client, svc, a))
    assert prompt_tokens(ask(client, svc, b)) == fresh
    assert prompt_tokens(ask(client, svc, a)) > fresh


def test_reset_topic_clears_one_session(svc: ServiceProcess, client: Client) -> None:
    a, b = unique("a"), unique("b")
    fresh = prompt_tokens(ask(client, svc, a))
    ask(client, svc, b)
    client.publish(f"{svc.base}/session/{a}/reset", "")
    assert prompt_tokens(ask(client, svc, a)) == fresh  # forgotten
    assert prompt_tokens(ask(client, svc, b)) > fresh  # untouched


def test_reset_with_an_invalid_key_is_refused(svc: ServiceProcess, client: Client) -> None:
    client.publish(f"{svc.base}/session/{'x' * 65}/reset", "")
    error = client.wait_for(lambda m: m.topic == f"{svc.base}/reply" and b"error" in m.payload)
    assert error[0].json()["error"]["code"] == "invalid_request"


def test_a_failed_turn_is_not_remembered(svc: ServiceProcess, client: Client) -> None:
    key = unique("f")
    rid = unique("long")
    client.publish(
        f"{svc.base}/ask", {"id": rid, "text": "word " * 3000, "session": key, "temperature": 0}
    )
    assert client.wait_for(final_for(rid))[0].json()["error"]["code"] == "prompt_too_long"
    assert prompt_tokens(ask(client, svc, key)) == prompt_tokens(ask(client, svc, None))


def test_least_recently_used_session_is_forgotten(svc: ServiceProcess, client: Client) -> None:
    keys = [unique("lru") for _ in range(4)]  # max_sessions = 3
    fresh = prompt_tokens(ask(client, svc, keys[0]))
    for key in keys[1:]:
        ask(client, svc, key)
    assert prompt_tokens(ask(client, svc, keys[0])) == fresh  # evicted by the fourth
    assert prompt_tokens(ask(client, svc, keys[3])) > fresh
