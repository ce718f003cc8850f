"""MQTT discovery as a real Home Assistant core sees it (HA 2025.4.4, its own `mqtt`
integration set up through its config flow) against the real service.

One broker, service and Home Assistant for the module; the tests run in file order and
the availability test, which restarts the service, comes last but one.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Broker
from tests.ha.harness import HomeAssistant, home_assistant
from tests.mqtt_helpers import Client, ServiceProcess, final_for, running, unique

LWT_WAIT_S = 40.0  # keepalive 10 s: the broker sends the will after 1.5 keepalives


@pytest.fixture(scope="module")
def svc(
    own_broker: Broker,
    own_watcher: Client,
    tiny_model_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServiceProcess]:
    service = ServiceProcess(
        tmp_path_factory.mktemp("ha-mqtt-svc"),
        own_broker.port,
        tiny_model_dir,
        # Room for a long stream for the cancel button; greedy, so replies are stable.
        config={"engine": {"max_tokens": 4096, "context_tokens": 2048, "temperature": 0}},
    )
    own_watcher.subscribe(f"{service.base}/reply/#", f"{service.base}/reply", retained=False)
    with running(service, own_watcher):
        yield service


@pytest.fixture(scope="module")
def discovery(svc: ServiceProcess, own_watcher: Client) -> dict[str, Any]:
    """What the service announced (the retained discovery message)."""
    own_watcher.subscribe(svc.discovery_topic)
    found = own_watcher.wait_for(svc.discovery_topic)
    payload: dict[str, Any] = found[-1].json()
    return payload


@pytest.fixture(scope="module")
def ha(
    own_broker: Broker, svc: ServiceProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HomeAssistant]:
    with home_assistant(tmp_path_factory.mktemp("ha-mqtt")) as core:
        entry = core.add_mqtt(own_broker.host, own_broker.port)
        assert entry["state"] == "loaded", entry
        yield core


def entity_of(ha: HomeAssistant, discovery: dict[str, Any], key: str) -> str:
    """The entity id Home Assistant gave the discovery component `key`; waits until it
    exists and is available."""
    unique_id = discovery["cmps"][key]["uniq_id"]
    for device in ha.devices("mqtt"):
        for entity in device["entities"]:
            if entity["unique_id"] == unique_id:
                ha.wait_state(entity["entity_id"], not_state="unavailable")
                return str(entity["entity_id"])
    raise AssertionError(f"Home Assistant has no entity for {key}")


@pytest.fixture(scope="module")
def device(ha: HomeAssistant, discovery: dict[str, Any]) -> dict[str, Any]:
    """The device, once Home Assistant has every entity of it available."""
    platform = discovery["cmps"]["ask"]["p"]
    ha.wait_state(f"{platform}.edge_assistant_ask", not_state="unavailable")
    devices = ha.devices("mqtt")
    assert len(devices) == 1, devices
    return devices[0]


def test_the_device_and_every_entity_with_its_unit(
    device: dict[str, Any], discovery: dict[str, Any]
) -> None:
    announced = discovery["dev"]
    assert device["name"] == announced["name"] == "Edge Assistant"
    assert device["manufacturer"] == announced["mf"]
    assert device["model"] == announced["mdl"]
    assert device["sw_version"] == announced["sw"]
    entities = {e["unique_id"]: e for e in device["entities"]}
    components = discovery["cmps"]
    assert len(components) == 11
    assert set(entities) == {c["uniq_id"] for c in components.values()}
    for key, component in components.items():
        entity = entities[component["uniq_id"]]
        assert entity["entity_id"].split(".")[0] == component["p"], key
        assert entity["original_name"] == component["name"], key
        assert entity["unit"] == component.get("unit_of_meas"), key
        assert entity["entity_category"] == component.get("ent_cat"), key
        assert entity["state"] != "unavailable", key
    # Telemetry reached the sensors (these always have a value).
    for key in ("cpu", "memory_available", "requests_total"):
        float(entities[components[key]["uniq_id"]]["state"])


def test_ask_sets_the_last_reply(
    ha: HomeAssistant,
    svc: ServiceProcess,
    own_watcher: Client,
    discovery: dict[str, Any],
    device: dict[str, Any],
) -> None:
    ask, last = entity_of(ha, discovery, "ask"), entity_of(ha, discovery, "last_reply")
    before = len(own_watcher.messages(f"{svc.base}/reply"))
    ha.call_service("text", "set_value", entity_id=ask, value="What is the capital of France?")
    reply = own_watcher.wait_for(f"{svc.base}/reply", count=before + 1)[-1].json()
    state = ha.wait_state(last, attribute="id", state=reply["id"])
    assert state["attributes"]["text"] == reply["text"]
    assert state["state"] == reply["text"][:250].strip() or len(reply["text"]) > 250


def test_the_cancel_button_ends_a_running_stream(
    ha: HomeAssistant,
    svc: ServiceProcess,
    own_watcher: Client,
    discovery: dict[str, Any],
    device: dict[str, Any],
) -> None:
    button = entity_of(ha, discovery, "cancel")
    request_id = unique("long")
    own_watcher.publish(
        f"{svc.base}/ask",
        {"id": request_id, "text": "go on", "max_tokens": 4096, "stream": True},
    )
    own_watcher.wait_for(lambda m: m.topic.endswith("/stream") and request_id.encode() in m.payload)
    ha.call_service("button", "press", entity_id=button)
    final = own_watcher.wait_for(final_for(request_id))[0].json()
    assert final["finish_reason"] == "cancelled", final["usage"]


def test_availability_on_start_sigterm_sigkill_and_restart(
    ha: HomeAssistant,
    svc: ServiceProcess,
    own_watcher: Client,
    discovery: dict[str, Any],
    device: dict[str, Any],
) -> None:
    entities = [entity_of(ha, discovery, key) for key in ("cpu", "ask", "cancel", "last_reply")]
    for entity_id in entities:  # on start
        assert ha.state(entity_id)["state"] != "unavailable"  # type: ignore[index]
    svc.signal(signal.SIGTERM)
    assert svc.wait() == 0
    for entity_id in entities:
        ha.wait_state(entity_id, state="unavailable", timeout_s=10)
    svc.start()
    svc.wait_online(own_watcher)
    for entity_id in entities:
        ha.wait_state(entity_id, not_state="unavailable")
    svc.signal(signal.SIGKILL)
    svc.wait()
    for entity_id in entities:  # through the Last Will
        ha.wait_state(entity_id, state="unavailable", timeout_s=LWT_WAIT_S)
    svc.start()
    svc.wait_online(own_watcher)
    for entity_id in entities:
        ha.wait_state(entity_id, not_state="unavailable")


def test_home_assistant_logged_no_mqtt_warning(ha: HomeAssistant, device: dict[str, Any]) -> None:
    records, _ = ha.warnings()
    assert [r for r in records if "mqtt" in r["name"]] == []
