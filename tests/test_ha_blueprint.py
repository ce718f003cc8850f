"""The Assist blueprint in a real Home Assistant core (HA 2025.4.4): saved the way the
UI's import saves it (`blueprint/save`), an automation made from it through the config
API, then Assist sentences matching its trigger, each answered with the model's reply on
the first try (no timeout fallback), 20 in a row, against the real service.

Home Assistant's import fetches the file from a URL, which cannot happen offline; the
`blueprint/save` step that follows the fetch is the same.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import Broker
from tests.ha.harness import HomeAssistant, home_assistant
from tests.mqtt_helpers import REPO, Client, Received, ServiceProcess, running

BLUEPRINT = REPO / "blueprints" / "automation" / "edge_assistant" / "ask_edge_assistant.yaml"
PATH = "edge_assistant/ask_edge_assistant.yaml"
ROUNDS = 20
FALLBACK = "Sorry, the assistant did not answer in time."  # the blueprint's default


@pytest.fixture(scope="module")
def svc(
    own_broker: Broker,
    own_watcher: Client,
    tiny_model_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServiceProcess]:
    service = ServiceProcess(
        tmp_path_factory.mktemp("ha-blueprint-svc"),
        own_broker.port,
        tiny_model_dir,
        config={"engine": {"temperature": 0}},  # greedy: never an empty reply
    )
    own_watcher.subscribe(f"{service.base}/reply/assist/+", retained=False)
    with running(service, own_watcher):
        yield service


@pytest.fixture(scope="module")
def ha(
    own_broker: Broker, svc: ServiceProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HomeAssistant]:
    with home_assistant(tmp_path_factory.mktemp("ha-blueprint")) as core:
        assert core.add_mqtt(own_broker.host, own_broker.port)["state"] == "loaded"
        yield core


@pytest.fixture(scope="module")
def automation(ha: HomeAssistant, svc: ServiceProcess) -> str:
    ha.ws(
        {
            "type": "blueprint/save",
            "domain": "automation",
            "path": PATH,
            "yaml": BLUEPRINT.read_text(),
            "source_url": "https://github.com/edge-assistant/edge-assistant/blob/main/"
            "blueprints/automation/edge_assistant/ask_edge_assistant.yaml",
        }
    )
    config = {
        "id": "ask_edge_assistant",
        "alias": "Ask Edge Assistant",
        "use_blueprint": {"path": PATH, "input": {"base_topic": svc.base}},
    }
    saved = ha.http("POST", "/api/config/automation/config/ask_edge_assistant", config)
    assert saved["status"] == 200, saved
    entity_id = "automation.ask_edge_assistant"
    ha.wait_state(entity_id, state="on")
    return entity_id


def deletion_of(topic: str) -> Callable[[Received], bool]:
    """An empty retained message on `topic`: how the blueprint deletes its reply."""
    return lambda m: m.topic == topic and m.payload == b""


def test_every_sentence_gets_the_models_reply_on_the_first_try(
    ha: HomeAssistant, svc: ServiceProcess, own_watcher: Client, automation: str
) -> None:
    replies = f"{svc.base}/reply/assist/"
    for n in range(ROUNDS):
        answer = ha.converse(f"ask the assistant what is {n} plus {n}", language="en")
        assert answer["response_type"] == "action_done", (n, answer)
        sent = [m for m in own_watcher.messages(lambda m: m.topic.startswith(replies)) if m.payload]
        assert len(sent) == n + 1, (n, [m.topic for m in sent])
        reply = json.loads(sent[-1].payload)
        assert "error" not in reply, reply
        # Its text, whatever the tiny random model said (empty too), not the fallback.
        assert answer["speech"] == reply["text"].strip(), (n, answer, reply)
        assert answer["speech"] != FALLBACK
        # The blueprint deleted its retained reply (an empty retained message).
        own_watcher.wait_for(deletion_of(sent[-1].topic))
    records, _ = ha.warnings()
    assert [r for r in records if r["name"].startswith("homeassistant.components.automation")] == []
