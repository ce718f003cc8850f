"""A real Home Assistant (2025.4.4, in its own venv) uses the service through its own,
unchanged `ollama` integration: set up through the config flow against a running
`edge-assistant serve`, with the Assist API on, then asked "turn on the kitchen light".

The model is the real default one (SmolLM2-135M), greedy, its tool calls constrained to
the tools' schemas (issue 15): the light must really turn on, and the answer be text.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Broker
from tests.ha.harness import HomeAssistant, home_assistant
from tests.http_helpers import ALIAS, http_service, serve_http, stats, url_of
from tests.mqtt_helpers import ServiceProcess

LIGHT = "light.kitchen_light"
# A template light backed by an input_boolean: turning it on is observable as state.
KITCHEN: dict[str, Any] = {
    "input_boolean": {"kitchen_light_power": {"name": "Kitchen light power"}},
    "light": [
        {
            "platform": "template",
            "lights": {
                "kitchen_light": {
                    "unique_id": "edge_assistant_test_kitchen_light",
                    "friendly_name": "Kitchen Light",
                    "value_template": "{{ is_state('input_boolean.kitchen_light_power', 'on') }}",
                    "turn_on": {
                        "action": "input_boolean.turn_on",
                        "target": {"entity_id": "input_boolean.kitchen_light_power"},
                    },
                    "turn_off": {
                        "action": "input_boolean.turn_off",
                        "target": {"entity_id": "input_boolean.kitchen_light_power"},
                    },
                }
            },
        }
    ],
}


@pytest.fixture(scope="module")
def svc(
    mosquitto: Broker, real_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    service = http_service(
        tmp_path_factory.mktemp("ha-ollama"),
        mosquitto,
        real_model_dir,
        {"engine": {"context_tokens": "auto", "max_tokens": 96}},
    )
    yield from serve_http(service, mosquitto)


@pytest.fixture(scope="module")
def ha(svc: ServiceProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HomeAssistant]:
    with home_assistant(tmp_path_factory.mktemp("ha"), KITCHEN) as hass:
        hass.ws(
            {
                "type": "homeassistant/expose_entity",
                "assistants": ["conversation"],
                "entity_ids": [LIGHT],
                "should_expose": True,
            }
        )
        yield hass


@pytest.fixture(scope="module")
def agent(ha: HomeAssistant, svc: ServiceProcess) -> str:
    entry = ha.add_ollama(url_of(svc), ALIAS, llm_hass_api="assist")
    assert entry["state"] == "loaded", entry
    agents = [e for e in entry["entities"] if e.startswith("conversation.")]
    assert len(agents) == 1, entry
    return str(agents[0])


def test_home_assistant_turns_on_the_kitchen_light_through_its_ollama_integration(
    ha: HomeAssistant, svc: ServiceProcess, agent: str
) -> None:
    before = stats(svc)["requests_total"]
    light = ha.state(LIGHT)
    assert light is not None and light["state"] == "off", light
    result = ha.converse("turn on the kitchen light", agent_id=agent)
    # HA ran the tool (a blocking service call) before it answered: no wait needed.
    light = ha.state(LIGHT)
    assert light is not None and light["state"] == "on", (light, result)
    assert result["response_type"] == "action_done", result
    assert isinstance(result["speech"], str) and result["speech"].strip(), result
    # The call, then the answer after the tool's result: two requests over HTTP.
    assert stats(svc)["requests_total"] >= before + 2
