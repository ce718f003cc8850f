"""The default temperature and system prompt (chosen by benchmarks/defaults_sweep.py): they
reach the GenerationRequest the worker hands the engine, a request's own values win over
them, and the code, the example config, the add-on's options and the docs agree on them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from assistant.config import EngineConfig, parse_config
from assistant.config_schema import ConfigError
from assistant.core.prompt import generation_request
from assistant.core.request import Request, Sampling
from assistant.engine.request import GenerationRequest, SamplingParams
from assistant.http.ollama_schema import parse_chat
from assistant.mqtt.requests import parse_request
from assistant.worker.protocol import GenerateFrame

ROOT = Path(__file__).resolve().parents[1]
DEFAULTS = EngineConfig()


def engine_side(request: Request, engine: EngineConfig) -> GenerationRequest:
    """What the worker decodes from the frame the service sends it: the engine's input."""
    frame = GenerateFrame(generation_request(request, engine))
    wire = json.loads(json.dumps(frame.to_payload()))
    return GenerateFrame.from_payload(wire).request


def test_built_in_defaults_reach_the_engine() -> None:
    engine = parse_config({}, env={}).engine
    got = engine_side(Request("r1", "mqtt", "c", "What is the capital of France?"), engine)
    # Greedy by default; top_p, top_k and the repetition penalty stay off.
    assert got.sampling == SamplingParams(temperature=0.0)
    assert got.sampling.greedy
    assert got.messages[0] == ("system", DEFAULTS.system_prompt)


def test_configured_values_reach_the_engine() -> None:
    engine = parse_config({"engine": {"temperature": 1.3, "system_prompt": "Be terse."}}, env={})
    got = engine_side(Request("r1", "mqtt", "c", "hi"), engine.engine)
    assert got.sampling == SamplingParams(temperature=1.3)
    assert got.messages[0] == ("system", "Be terse.")


def test_a_requests_own_values_win() -> None:
    engine = parse_config({"engine": {"temperature": 1.3}}, env={}).engine
    asked = Sampling(temperature=0.0, top_p=0.5, top_k=3, repeat_penalty=1.05, seed=9)
    got = engine_side(Request("r1", "mqtt", "c", "hi", sampling=asked, system="Hi."), engine)
    # 0 is a value, not "unset": greedy over the configured 1.3.
    assert got.sampling == SamplingParams(0.0, top_k=3, top_p=0.5, repetition_penalty=1.05, seed=9)
    assert got.messages[0] == ("system", "Hi.")
    warm = Request("r2", "mqtt", "c", "hi", sampling=Sampling(temperature=0.7))
    assert engine_side(warm, DEFAULTS).sampling == SamplingParams(temperature=0.7)


def test_front_ends_pass_overrides_and_leave_the_rest_to_the_config() -> None:
    engine = parse_config({"engine": {"temperature": 0.4}}, env={}).engine
    mqtt = parse_request(b'{"text": "hi", "top_p": 0.9, "top_k": 40}').request
    assert engine_side(mqtt, engine).sampling == SamplingParams(0.4, top_k=40, top_p=0.9)
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    no_options = parse_chat(body, "r2", "c").request  # what Home Assistant sends
    assert engine_side(no_options, engine).sampling == SamplingParams(0.4)
    options = {"temperature": 0.8, "repeat_penalty": 1.1}
    ollama = parse_chat({**body, "options": options}, "r3", "c").request
    assert engine_side(ollama, engine).sampling == SamplingParams(0.8, repetition_penalty=1.1)


def engine_options(tree: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in tree["engine"].items() if k in ("temperature", "system_prompt")}


def test_example_config_addon_and_docs_state_the_code_defaults() -> None:
    code = {"temperature": DEFAULTS.temperature, "system_prompt": DEFAULTS.system_prompt}
    example = yaml.safe_load((ROOT / "config.yaml.example").read_text())
    addon = yaml.safe_load((ROOT / "addon" / "config.yaml").read_text())
    assert engine_options(example) == code
    assert engine_options(addon["options"]) == code
    docs = (ROOT / "addon" / "DOCS.md").read_text()
    assert f"| `engine.temperature` | `{DEFAULTS.temperature:g}` |" in docs
    assert f'| `engine.system_prompt` | "{DEFAULTS.system_prompt}" |' in docs


@pytest.mark.parametrize(
    ("engine", "message"),
    [
        ({"temperature": 2.5}, "engine.temperature: must be at most 2.0, got 2.5"),
        ({"temperature": -0.1}, "engine.temperature: must be at least 0.0, got -0.1"),
        ({"temperature": "low"}, "engine.temperature: must be a number, got 'low'"),
        ({"system_prompt": 5}, "engine.system_prompt: must be a string, got 5"),
        ({"system_prompt": "x" * 4001}, "engine.system_prompt: must be at most 4000 characters"),
    ],
)
def test_bad_values_name_the_key(engine: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"engine": engine}, env={})
    assert str(err.value).startswith(message)
