"""The MQTT contract's `tools` and `schema` fields, end to end: the real service with the
real default model (HA's tool block alone outgrows the tiny model's 512-token window), the
suite's Mosquitto, a paho client."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Broker
from tests.grammar_cases import ha_first_turn, system_prompt
from tests.mqtt_helpers import Client, ServiceProcess, final_for, listening, serving

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def svc(
    mosquitto: Broker, real_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    service = ServiceProcess(
        tmp_path_factory.mktemp("svc"),
        mosquitto.port,
        real_model_dir,
        config={"engine": {"max_tokens": 120, "context_tokens": 4096}},
    )
    yield from serving(service, mosquitto.host, mosquitto.port)


@pytest.fixture
def client(mosquitto: Broker, svc: ServiceProcess) -> Iterator[Client]:
    yield from listening(mosquitto.host, mosquitto.port, f"{svc.base}/reply/#")


def final(client: Client, request_id: str) -> dict[str, Any]:
    body: dict[str, Any] = client.wait_for(final_for(request_id))[0].json()
    return body


def test_schema_request_gets_json_matching_it(svc: ServiceProcess, client: Client) -> None:
    schema = {
        "type": "object",
        "properties": {"label": {"enum": ["bill", "spam", "personal"]}},
        "required": ["label"],
    }
    client.publish(
        f"{svc.base}/ask",
        {"id": "schema-1", "text": "Classify: your bill is due", "schema": schema},
    )
    body = final(client, "schema-1")
    assert body["finish_reason"] == "stop" and "tool_calls" not in body
    assert json.loads(body["text"])["label"] in ("bill", "spam", "personal")


def test_tools_request_gets_a_grounded_tool_call(svc: ServiceProcess, client: Client) -> None:
    """HA's tools and its system prompt with a Static Context: the reply is one call on
    the named device (the decision and the grounding see to it)."""
    client.publish(
        f"{svc.base}/ask",
        {
            "id": "tools-1",
            "text": "turn off the living room tv",
            "system": system_prompt(),
            "tools": ha_first_turn()["tools"],
        },
    )
    body = final(client, "tools-1")
    assert "error" not in body, body
    assert body["finish_reason"] == "tool_calls" and body["text"] == ""
    (call,) = body["tool_calls"]
    assert call["name"] == "HassTurnOff"
    assert call["arguments"]["name"] == "Living Room TV"


def test_hostile_schema_is_an_invalid_request(svc: ServiceProcess, client: Client) -> None:
    recursive = {"$defs": {"n": {"items": {"$ref": "#/$defs/n"}}}, "$ref": "#/$defs/n"}
    client.publish(f"{svc.base}/ask", {"id": "schema-2", "text": "x", "schema": recursive})
    body = final(client, "schema-2")
    assert body["error"]["code"] == "invalid_request"
    assert "recursive reference" in body["error"]["message"]
