"""Real clients against the real service's HTTP API: the ollama client in Home Assistant
2025.4's pinned version (0.4.7) and the newest, the openai client, and the exact bodies a
real Home Assistant sent. The model is the real default one, greedy: tests check the
structure of what comes back, not its words."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.conftest import Broker
from tests.http_helpers import ALIAS, call, http_service, serve_http, stats, url_of
from tests.mqtt_helpers import REPO, Client, Received, ServiceProcess

OLLAMA_047 = REPO / ".venv" / "ollama-0.4.7"
HA_BODIES = Path(__file__).parent / "data" / "ha_requests"


@pytest.fixture(scope="module")
def svc(
    mosquitto: Broker, real_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    service = http_service(tmp_path_factory.mktemp("http"), mosquitto, real_model_dir)
    yield from serve_http(service, mosquitto)


def ollama_round_trip(svc: ServiceProcess, pythonpath: str | None) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    done = subprocess.run(
        [sys.executable, "-m", "tests.http_clients.ollama_round_trip", url_of(svc)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.mark.parametrize("pinned", [True, False], ids=["ollama-0.4.7", "ollama-newest"])
def test_ollama_client_list_chat_stream_and_tool_round_trip(
    svc: ServiceProcess, pinned: bool
) -> None:
    if pinned:
        assert (OLLAMA_047 / "ollama").is_dir(), "run scripts/setup.sh (installs ollama 0.4.7)"
    out = ollama_round_trip(svc, str(OLLAMA_047) if pinned else None)
    assert (out["version"] == "0.4.7") is pinned, out
    assert out["path"].startswith(str(OLLAMA_047)) is pinned
    assert ALIAS in out["models"] and len(out["models"]) == 2
    assert out["whole"]["role"] == "assistant" and out["whole"]["done"] is True
    assert isinstance(out["whole"]["content"], str)
    stream = out["stream"]
    assert stream["done"][-1] is True and not any(stream["done"][:-1])
    assert stream["done_reason"] in ("stop", "length") and stream["eval_count"] >= 1
    assert stream["chunks"] >= 2
    # The prompt's history shows this call: greedy decoding repeats it as a real call.
    assert out["tool_calls"] == [{"name": "HassTurnOn", "arguments": {"name": "Kitchen Light"}}]
    assert out["after_tool"] == {"content_type": "str", "done": True}


def test_home_assistant_bodies_stream_ndjson_it_accepts(svc: ServiceProcess) -> None:
    for path in sorted(HA_BODIES.glob("*.json")):
        body = json.loads(path.read_text()) | {"model": ALIAS}
        answer = call(svc, "POST", "/api/chat", body)
        assert answer.status == 200, (path.name, answer.body[:300])
        assert answer.headers["Content-Type"].startswith("application/x-ndjson")
        lines = answer.lines()
        assert all(line["message"]["role"] == "assistant" for line in lines)
        assert all(line["model"] == ALIAS for line in lines)
        assert [line["done"] for line in lines] == [False] * (len(lines) - 1) + [True]
        last = lines[-1]
        assert last["done_reason"] in ("stop", "length")
        assert last["prompt_eval_count"] > 900  # HA's instructions, entities and tools
        for line in lines:
            for tool_call in line["message"].get("tool_calls", []):
                assert isinstance(tool_call["function"]["arguments"], dict)


@pytest.fixture
def oai(svc: ServiceProcess) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(base_url=f"{url_of(svc)}/v1", api_key="unused", max_retries=0)
    with client:  # closes its connection pool (an unclosed socket warns, and warnings fail)
        yield client


def test_openai_models_and_chat_whole_and_streamed(oai: openai.OpenAI) -> None:
    ids = [m.id for m in oai.models.list().data]
    assert ids[0] == ALIAS and len(ids) == 2
    whole = oai.chat.completions.create(
        model=ALIAS, messages=[{"role": "user", "content": "Hello"}], max_tokens=6
    )
    choice = whole.choices[0]
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert whole.usage is not None and whole.usage.completion_tokens >= 1
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens
    chunks = list(
        oai.chat.completions.create(
            model=ALIAS,
            messages=[{"role": "user", "content": "Hello"}],
            max_tokens=6,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] in ("stop", "length") and all(f is None for f in finishes[:-1])
    assert chunks[-1].usage is not None and chunks[-1].choices == []


OPENAI_TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "HassTurnOn",
            "description": "Turns on/opens a device or entity",
            "parameters": {"type": "object", "properties": {"name": {"type": "string"}}},
        },
    }
]
OPENAI_HISTORY: list[Any] = [
    {"role": "user", "content": "turn on the kitchen light"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "HassTurnOn", "arguments": '{"name": "Kitchen Light"}'},
            }
        ],
    },
    {"role": "user", "content": "Again: turn on the kitchen light"},
]


def test_openai_tool_calls_whole_and_streamed(oai: openai.OpenAI) -> None:
    whole = oai.chat.completions.create(
        model=ALIAS, messages=OPENAI_HISTORY, tools=OPENAI_TOOLS, temperature=0, max_tokens=48
    )
    choice = whole.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = [c for c in choice.message.tool_calls or [] if c.type == "function"]
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("HassTurnOn", {"name": "Kitchen Light"})
    ]
    assert calls[0].id
    stream = oai.chat.completions.create(
        model=ALIAS,
        messages=OPENAI_HISTORY,
        tools=OPENAI_TOOLS,
        temperature=0,
        max_tokens=48,
        stream=True,
    )
    deltas = [c.choices[0] for c in stream if c.choices]
    streamed = [t for d in deltas for t in (d.delta.tool_calls or [])]
    assert len(streamed) == 1 and streamed[0].function is not None
    assert json.loads(streamed[0].function.arguments or "") == {"name": "Kitchen Light"}
    assert deltas[-1].finish_reason == "tool_calls"
    # The result goes back with its tool_call_id; the answer is text.
    messages: list[Any] = [
        *OPENAI_HISTORY,
        whole.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": calls[0].id, "content": '{"success": true}'},
    ]
    follow = oai.chat.completions.create(
        model=ALIAS,
        messages=messages,
        tools=OPENAI_TOOLS,
        temperature=0,
        max_tokens=16,
    )
    assert isinstance(follow.choices[0].message.content, str)


def test_openai_response_format_is_accepted(oai: openai.OpenAI) -> None:
    schema: dict[str, Any] = {"type": "object", "properties": {"colour": {"type": "string"}}}
    whole = oai.chat.completions.create(
        model=ALIAS,
        messages=[{"role": "user", "content": "Name a colour as JSON."}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "colour", "schema": schema},
        },
        max_tokens=12,
    )
    assert whole.choices[0].finish_reason in ("stop", "length")
    assert isinstance(whole.choices[0].message.content, str)


def test_telemetry_and_info_count_http_requests(mosquitto: Broker, svc: ServiceProcess) -> None:
    client = Client(mosquitto.host, mosquitto.port)
    try:
        client.subscribe(f"{svc.base}/info")  # retained
        assert client.wait_until(lambda got: any(m.topic.endswith("/info") for m in got))
        info = next(m.json() for m in client.received if m.topic.endswith("/info"))
        assert info["http_port"] == int(svc.settings["http"]["port"])
        assert info["config"]["http"]["enabled"] is True
        seen = stats(svc)
        assert call(svc, "POST", "/api/chat", b"{broken").status == 400
        body = {"model": ALIAS, "stream": False, "messages": [{"role": "user", "content": "Hi"}]}
        assert call(svc, "POST", "/api/chat", body | {"options": {"num_predict": 2}}).status == 200
        client.subscribe(f"{svc.base}/telemetry", retained=False)

        def counted(got: list[Received]) -> bool:
            return any(
                m.topic.endswith("/telemetry")
                and m.json()["http"]["requests_total"] > seen["requests_total"]
                and m.json()["http"]["invalid_total"] > seen["invalid_total"]
                for m in got
            )

        assert client.wait_until(counted), "no telemetry counted the HTTP requests"
        telemetry = [m.json() for m in client.received if m.topic.endswith("/telemetry")][-1]
        assert telemetry["requests_total"] >= telemetry["http"]["requests_total"]
        assert telemetry["errors_total"] >= telemetry["http"]["invalid_total"]
    finally:
        client.close()
