"""Rhasspy Hermes through the suite's real broker: a paho client plays Rhasspy (its ASR,
TTS and dialogue manager) against the real service with `hermes.enabled`.

rhasspy-hermes pins paho-mqtt==1.5.0, so it cannot be a declared dependency next to
paho-mqtt 2.x (pyproject.toml). The payloads here are built by hand with the field names
of its classes (camelCase JSON); where the package is installed (`pip install --no-deps
rhasspy-hermes` next to dataclasses-json==0.5.6) one more test speaks through its own
`AsrTextCaptured`, `TtsSay`, `TtsSayFinished` and `DialogueEndSession` classes.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from assistant.voice import apology
from assistant.voice.hermes import EndSession, TextCaptured, TtsSay
from tests.conftest import Broker
from tests.mqtt_helpers import (
    Client,
    Received,
    ServiceProcess,
    final_for,
    listening,
    serving,
    unique,
)

TEXT_CAPTURED = "hermes/asr/textCaptured"
SAY = "hermes/tts/say"
SAY_FINISHED = "hermes/tts/sayFinished"
END_SESSION = "hermes/dialogueManager/endSession"


@pytest.fixture(scope="module")
def svc(
    mosquitto: Broker, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    service = ServiceProcess(
        tmp_path_factory.mktemp("hermes"),
        mosquitto.port,
        tiny_model_dir,
        config={"hermes": {"enabled": True}, "engine": {"temperature": 0}},
    )
    yield from serving(service, mosquitto.host, mosquitto.port)


@pytest.fixture
def rhasspy(mosquitto: Broker, svc: ServiceProcess) -> Iterator[Client]:
    """Rhasspy's side: hears what the assistant says and how it ends sessions."""
    yield from listening(mosquitto.host, mosquitto.port, SAY, END_SESSION, f"{svc.base}/reply/#")


def text_captured(text: str, site_id: str, session_id: str | None = None) -> dict[str, Any]:
    """AsrTextCaptured's JSON, as rhasspy-hermes 0.6 writes it."""
    return {
        "text": text,
        "likelihood": 1.0,
        "seconds": 0.5,
        "siteId": site_id,
        "sessionId": session_id,
        "wakewordId": None,
        "asrTokens": None,
        "lang": None,
    }


def say_for(site_id: str) -> Any:
    return lambda m: m.topic == SAY and m.json().get("siteId") == site_id


def end_for(session_id: str) -> Any:
    return lambda m: m.topic == END_SESSION and m.json().get("sessionId") == session_id


def test_text_without_a_dialogue_session_is_spoken_on_tts_say(
    svc: ServiceProcess, rhasspy: Client
) -> None:
    site = unique("site")
    rhasspy.publish(TEXT_CAPTURED, text_captured("what time is it", site))
    say = rhasspy.wait_for(say_for(site))[0].json()
    assert set(say) == {"text", "siteId", "sessionId", "id"}
    assert say["text"].strip() and say["sessionId"] is None and say["id"]
    # A sentinel with a dialogue session: a stray endSession for the first text would have
    # been published right after its tts/say, before the sentinel's.
    sentinel = unique("dm")
    rhasspy.publish(TEXT_CAPTURED, text_captured("and now?", site, sentinel))
    said = rhasspy.wait_for(lambda m: m.topic == SAY and m.json()["sessionId"] == sentinel)
    rhasspy.publish(SAY_FINISHED, {"id": said[0].json()["id"], "siteId": site})
    rhasspy.wait_for(end_for(sentinel), timeout=5)
    ended = [m.json()["sessionId"] for m in rhasspy.messages(END_SESSION)]
    assert ended == [sentinel]  # no dialogue session: nothing to end


def test_a_dialogue_session_ends_after_the_speech_finished(
    svc: ServiceProcess, rhasspy: Client
) -> None:
    site, session = unique("site"), unique("dm")
    captured = text_captured("turn on the light", site, session)
    captured["lang"] = "en"
    rhasspy.publish(TEXT_CAPTURED, captured)
    say = rhasspy.wait_for(say_for(site))[0].json()
    assert say["sessionId"] == session and say["lang"] == "en"
    # A sentinel round trip: an endSession sent without waiting would precede its tts/say.
    other = unique("site")
    rhasspy.publish(TEXT_CAPTURED, text_captured("and the hall?", other))
    rhasspy.wait_for(say_for(other))
    assert not rhasspy.messages(end_for(session))  # still speaking: the session stays
    rhasspy.publish(SAY_FINISHED, {"id": say["id"], "siteId": site, "sessionId": session})
    end = rhasspy.wait_for(end_for(session), timeout=5)[0].json()
    assert end == {"sessionId": session}  # no text: the answer was already spoken


def test_errors_are_spoken_as_an_apology(svc: ServiceProcess, rhasspy: Client) -> None:
    site, session = unique("site"), unique("dm")
    rhasspy.publish(TEXT_CAPTURED, text_captured("word " * 3000, site, session))
    say = rhasspy.wait_for(say_for(site))[0].json()
    assert say["text"] == "Sorry, that is too long for me to answer."
    rhasspy.publish(SAY_FINISHED, {"id": say["id"], "siteId": site})
    rhasspy.wait_for(end_for(session), timeout=5)  # the session is ended all the same
    assert "prompt_too_long" in svc.log()  # and logged


def test_nothing_understood_is_an_apology_too(svc: ServiceProcess, rhasspy: Client) -> None:
    site = unique("site")
    rhasspy.publish(TEXT_CAPTURED, text_captured("", site))
    say = rhasspy.wait_for(say_for(site))[0].json()
    assert say["text"] == "Sorry, I did not catch a question."


def test_the_site_is_the_session_key(svc: ServiceProcess, rhasspy: Client) -> None:
    site = unique("site")

    def prompt_tokens() -> int:
        rid = unique("r")
        rhasspy.publish(
            f"{svc.base}/ask", {"id": rid, "text": "and then?", "session": site, "max_tokens": 1}
        )
        body: dict[str, Any] = rhasspy.wait_for(final_for(rid))[0].json()
        rhasspy.publish(f"{svc.base}/session/{site}/reset", "")
        return int(body["usage"]["prompt_tokens"])

    fresh = prompt_tokens()  # (and reset again)
    rhasspy.publish(TEXT_CAPTURED, text_captured("what is the weather", site))
    rhasspy.wait_for(say_for(site))  # the turn is stored before tts/say is published
    assert prompt_tokens() > fresh


def test_malformed_messages_are_ignored_and_the_service_keeps_answering(
    svc: ServiceProcess, rhasspy: Client
) -> None:
    for payload in (b"not json", b"[1]", b'{"text": 5, "siteId": "x"}', b"\xff\xfe"):
        rhasspy.publish(TEXT_CAPTURED, payload)
    site = unique("site")
    rhasspy.publish(TEXT_CAPTURED, text_captured("hello", site))
    rhasspy.wait_for(say_for(site))
    assert len(rhasspy.messages(lambda m: m.topic == SAY)) == 1


def test_hand_built_messages_parse_and_render() -> None:
    captured = TextCaptured.from_payload(json.dumps(text_captured("hi", "k", "s")).encode())
    assert captured == TextCaptured("hi", "k", "s", None)
    assert TextCaptured.from_payload(b'{"text": "hi"}').site_id == "default"
    say = json.loads(TtsSay("hi", "k", "r1", None, "de").to_payload())
    assert say == {"text": "hi", "siteId": "k", "sessionId": None, "id": "r1", "lang": "de"}
    assert json.loads(EndSession("s").to_payload()) == {"sessionId": "s"}
    assert apology(None).startswith("Sorry")


def test_round_trip_with_rhasspy_hermes_classes(svc: ServiceProcess, rhasspy: Client) -> None:
    # scripts/setup.sh installs rhasspy-hermes (without its paho 1.5 pin): missing is a failure.
    asr = importlib.import_module("rhasspyhermes.asr")
    tts = importlib.import_module("rhasspyhermes.tts")
    dialogue = importlib.import_module("rhasspyhermes.dialogue")
    site, session = unique("site"), unique("dm")
    message = asr.AsrTextCaptured(
        text="tell me a joke", likelihood=0.9, seconds=1.2, site_id=site, session_id=session
    )
    rhasspy.publish(asr.AsrTextCaptured.topic(), message.to_json())

    def is_say(m: Received) -> bool:
        return m.topic == SAY and bool(tts.TtsSay.from_json(m.payload).site_id == site)

    say = tts.TtsSay.from_json(rhasspy.wait_for(is_say)[0].payload)
    assert say.text.strip() and say.session_id == session and say.id
    finished = tts.TtsSayFinished(id=say.id, site_id=site, session_id=session)
    rhasspy.publish(tts.TtsSayFinished.topic(), finished.to_json())
    end = rhasspy.wait_for(end_for(session))[0]
    ended = dialogue.DialogueEndSession.from_json(end.payload)
    assert ended.session_id == session and ended.text is None
