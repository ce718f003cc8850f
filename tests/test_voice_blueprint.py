"""The Assist blueprint: valid blueprint YAML (HA's `!input` tags), the keys Home Assistant
requires, and templates that, rendered, make a request the service accepts with a reply
topic the contract allows, on which the blueprint then waits."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml

from assistant.mqtt.requests import parse_request
from assistant.mqtt.topics import Topics

ROOT = Path(__file__).resolve().parent.parent
BLUEPRINT = ROOT / "blueprints" / "automation" / "edge_assistant" / "ask_edge_assistant.yaml"


class Input:
    """A `!input name` reference."""

    def __init__(self, name: str) -> None:
        self.name = name


class BlueprintLoader(yaml.SafeLoader):
    """SafeLoader plus Home Assistant's `!input` tag."""


def _input(loader: yaml.SafeLoader, node: yaml.Node) -> Input:
    assert isinstance(node, yaml.ScalarNode)
    return Input(str(loader.construct_scalar(node)))


BlueprintLoader.add_constructor("!input", _input)


def load() -> dict[str, Any]:
    data: dict[str, Any] = yaml.load(BLUEPRINT.read_text(), Loader=BlueprintLoader)
    return data


def substitute(node: Any, inputs: dict[str, Any]) -> Any:
    """What Home Assistant does when the blueprint is used: `!input` → the input's value."""
    if isinstance(node, Input):
        return inputs[node.name]
    if isinstance(node, dict):
        return {k: substitute(v, inputs) for k, v in node.items()}
    if isinstance(node, list):
        return [substitute(v, inputs) for v in node]
    return node


def defaults(blueprint: dict[str, Any]) -> dict[str, Any]:
    return {name: spec["default"] for name, spec in blueprint["blueprint"]["input"].items()}


def render(env: jinja2.Environment, value: Any, variables: dict[str, Any]) -> Any:
    """Render like HA's native templates: a string template, then its Python value."""
    if isinstance(value, dict):
        return {k: render(env, v, variables) for k, v in value.items()}
    if not isinstance(value, str) or "{" not in value:
        return value
    text = env.from_string(value).render(**variables)
    return None if text == "None" else text


def walk(node: Any) -> list[Any]:
    found = [node]
    if isinstance(node, dict):
        for value in node.values():
            found += walk(value)
    elif isinstance(node, list):
        for value in node:
            found += walk(value)
    return found


def test_the_file_is_not_read_as_an_addon_manifest() -> None:
    assert BLUEPRINT.name not in {"config.yaml", "config.yml", "config.json"}


def test_blueprint_keys_home_assistant_requires() -> None:
    data = load()
    meta = data["blueprint"]
    assert meta["domain"] == "automation"
    assert meta["name"].strip() and meta["description"].strip()
    assert meta["source_url"].endswith(str(BLUEPRINT.relative_to(ROOT)))
    assert set(data) >= {"blueprint", "triggers", "actions"}
    for name, spec in meta["input"].items():
        assert spec["name"] and spec["description"] and "selector" in spec, name
        assert "default" in spec, name  # usable without filling anything in
    used = {node.name for node in walk(data) if isinstance(node, Input)}
    assert used == set(meta["input"]), "every input is used, and only declared ones"


def test_trigger_is_a_conversation_sentence_with_a_question_wildcard() -> None:
    data = load()
    (trigger,) = data["triggers"]
    assert trigger["trigger"] == "conversation"
    assert isinstance(trigger["command"], Input)
    sentences = defaults(data)[trigger["command"].name]
    assert sentences and all("{question}" in s for s in sentences)


def test_actions_publish_wait_and_answer() -> None:
    data = load()
    kinds = [next(iter(step)) for step in data["actions"]]
    assert kinds == [
        "variables",  # needs the run's context: not in the automation-level variables
        "action",
        "wait_for_trigger",
        "variables",
        "action",
        "set_conversation_response",
    ]
    assert not any("context" in str(v) for v in data["variables"].values())
    publish, wait, delete = data["actions"][1], data["actions"][2], data["actions"][4]
    assert publish["action"] == delete["action"] == "mqtt.publish"
    assert delete["data"]["retain"] is True and delete["data"]["payload"] == ""
    assert wait["continue_on_timeout"] is True and "seconds" in wait["timeout"]
    (mqtt_trigger,) = wait["wait_for_trigger"]
    assert mqtt_trigger["trigger"] == "mqtt"


@pytest.mark.parametrize("base", ["edge_assistant", "home/kitchen/assistant"])
@pytest.mark.parametrize("session", ["assist", ""])
def test_rendered_request_is_accepted_and_its_reply_topic_awaited(base: str, session: str) -> None:
    data = load()
    inputs = {**defaults(data), "base_topic": base, "session": session}
    used = substitute({k: v for k, v in data.items() if k != "blueprint"}, inputs)
    env = jinja2.Environment(autoescape=False, undefined=jinja2.StrictUndefined)
    env.filters["to_json"] = json.dumps
    variables: dict[str, Any] = {
        "context": {"id": "01JBX7Q2M3N4P5R6S7T8V9W0XY"},
        "trigger": {"slots": {"question": "what should I cook tonight?"}},
    }
    for name, value in used["variables"].items():  # in order, as HA renders them
        variables[name] = render(env, value, variables)
    for name, value in used["actions"][0]["variables"].items():
        variables[name] = render(env, value, variables)

    publish = used["actions"][1]["data"]
    topic = render(env, publish["topic"], variables)
    payload = render(env, publish["payload"], variables)
    assert topic == f"{base}/ask"
    ask = parse_request(payload.encode())
    assert ask.request.id == "01JBX7Q2M3N4P5R6S7T8V9W0XY"
    assert ask.request.text == "what should I cook tonight?"
    assert ask.request.session == (session or None)
    assert ask.retain  # a late subscription still gets the reply
    topics = Topics(base)
    assert ask.reply_to is not None
    assert topics.reply_topic_problem(ask.reply_to) is None  # the contract allows it
    waited = render(env, used["actions"][2]["wait_for_trigger"][0]["topic"], variables)
    assert waited == ask.reply_to
    assert render(env, used["actions"][4]["data"]["topic"], variables) == ask.reply_to

    # HA renders `reply` natively: the reply's JSON object, or None after a timeout.
    assert "wait.trigger.payload_json" in used["actions"][3]["variables"]["reply"]
    answer = used["actions"][5]["set_conversation_response"]
    cases: list[tuple[dict[str, Any] | None, str]] = [
        ({"id": "x", "text": "Pasta."}, "Pasta."),
        (None, inputs["fallback"]),
        ({"id": "x", "error": {"code": "busy"}}, "Sorry, the assistant could not answer (busy)."),
    ]
    for reply, expected in cases:
        said = env.from_string(answer).render(**variables, reply=reply).strip()
        assert said == expected
