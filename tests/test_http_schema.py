"""The HTTP APIs' translation layers on their own: bodies (the real ones Home Assistant
sent) into typed Requests, tools and tool calls into prompt text and back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from assistant.core.events import ToolCall
from assistant.core.request import Message, Tool
from assistant.core.tool_calls import ToolTextFilter, parse_tool_calls
from assistant.core.tool_prompt import render_messages
from assistant.http.body import BodyError, parse_json
from assistant.http.ollama_schema import parse_chat, parse_generate
from assistant.http.openai_schema import parse_completion

HA_BODIES = Path(__file__).parent / "data" / "ha_requests"


def ha_body(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((HA_BODIES / name).read_text())
    return data


def test_home_assistant_first_turn_becomes_a_typed_request() -> None:
    for name in (
        "ollama_chat_first_turn_ha2025.4.4.json",
        "ollama_chat_first_turn_ha2026.2.3.json",
    ):
        call = parse_chat(ha_body(name), "r1", "http:127.0.0.1")
        request = call.request
        assert call.stream is True and call.model == "llama3.2:latest"
        assert request.context_tokens == 8192  # sent as 8192.0
        assert [m.role for m in request.messages] == ["system", "user"]
        assert request.messages[1].content == "turn on the kitchen light"
        assert "HassTurnOn" in {t.name for t in request.tools}
        assert all(t.parameters["type"] == "object" for t in request.tools)
        assert request.front_end == "http" and request.client == "http:127.0.0.1"


def test_home_assistant_second_turn_keeps_the_call_and_its_result() -> None:
    request = parse_chat(ha_body("ollama_chat_second_turn_ha2025.4.4.json"), "r2", "c").request
    assistant, tool = request.messages[2], request.messages[3]
    assert assistant.tool_calls == (ToolCall("HassTurnOn", {"name": "Kitchen Light"}),)
    assert assistant.content == ""  # HA sends null content with a call
    assert tool.role == "tool" and json.loads(tool.content)["response_type"] == "action_done"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "model: required"),
        ({"model": "m", "messages": "hi"}, "messages: must be a list"),
        ({"model": "m", "messages": []}, "messages: at least one message"),
        ({"model": "m", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "content: must be a string"),
        (
            {
                "model": "m",
                "messages": [{"role": "user", "content": "x"}],
                "options": {"num_ctx": 8192.5},
            },
            "options.num_ctx: must be a whole number",
        ),
        (
            {
                "model": "m",
                "messages": [{"role": "user", "content": "x"}],
                "options": {"temperature": "hot"},
            },
            "options.temperature: must be a number",
        ),
        (
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "keep_alive": [1]},
            "keep_alive",
        ),
        (
            {
                "model": "m",
                "messages": [{"role": "user", "content": "x"}],
                "tools": [{"type": "web"}],
            },
            "tools[0]",
        ),
        (
            {"model": "m", "messages": [{"role": "user", "content": "x", "images": ["AAA"]}]},
            "text only",
        ),
        (
            {
                "model": "m",
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [{"function": {"name": "f", "arguments": "[1]"}}],
                    },
                    {"role": "user", "content": "x"},
                ],
            },
            "must be a JSON object",
        ),
    ],
)
def test_bad_ollama_bodies_say_what_is_wrong(body: dict[str, Any], message: str) -> None:
    with pytest.raises(BodyError, match=message.replace("[", r"\[").replace("]", r"\]")) as err:
        parse_chat(body, "r", "c")
    assert err.value.status == 400


def test_ollama_options_floats_keep_alive_and_empty_tools() -> None:
    body = {
        "model": "edge-assistant",
        "messages": [{"role": "user", "content": "hi"}],
        "options": {
            "num_ctx": 4096.0,
            "num_predict": 32.0,
            "temperature": 0,
            "top_p": 0.9,
            "top_k": 40.0,
            "seed": 7,
            "stop": ["\n\n"],
            "repeat_penalty": 1.1,
            "num_thread": 4,
        },
        "keep_alive": "-1.0s",
        "tools": [],
        "think": False,
        "format": "json",
        "stream": False,
    }
    call = parse_chat(body, "r", "c")
    request = call.request
    assert call.stream is False and request.tools == ()
    assert (request.max_tokens, request.context_tokens) == (32, 4096)
    sampling = request.sampling
    assert (sampling.temperature, sampling.top_p, sampling.top_k, sampling.seed) == (
        0.0,
        0.9,
        40,
        7,
    )
    assert sampling.stop == ("\n\n",) and sampling.repeat_penalty == 1.1
    assert request.output_schema == {"type": "object"}
    unlimited = parse_chat(body | {"options": {"num_predict": -1}}, "r", "c")
    assert unlimited.request.max_tokens is None


def test_generate_with_an_empty_prompt_only_names_the_model() -> None:
    assert parse_generate({"model": "edge-assistant"}, "r", "c") == "edge-assistant"
    call = parse_generate({"model": "m", "prompt": "Hi", "system": "Be brief"}, "r", "c")
    assert not isinstance(call, str)
    assert (call.request.text, call.request.system, call.stream) == ("Hi", "Be brief", True)
    with pytest.raises(BodyError, match="raw"):
        parse_generate({"model": "m", "prompt": "Hi", "raw": True}, "r", "c")


def test_malformed_json_and_non_objects_are_refused() -> None:
    for raw, message in (
        (b"{", "not valid JSON"),
        (b"[1]", "must be a JSON object"),
        (b"\xff", "not UTF-8"),
        (b"[" * 100_000, "not valid JSON"),
    ):
        with pytest.raises(BodyError, match=message):
            parse_json(raw)


def test_openai_completion_tools_results_and_response_format() -> None:
    body = {
        "model": "edge-assistant",
        "messages": [
            {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
            {"role": "user", "content": "lights on"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "a",
                        "type": "function",
                        "function": {"name": "on", "arguments": '{"x": 1}'},
                    },
                    {"id": "b", "type": "function", "function": {"name": "off", "arguments": "{}"}},
                ],
            },
            {"role": "tool", "tool_call_id": "b", "content": "off done"},
            {"role": "tool", "tool_call_id": "a", "content": "on done"},
        ],
        "tools": [
            {"type": "function", "function": {"name": "on", "parameters": {"type": "object"}}},
            {"type": "function", "function": {"name": "off"}},
        ],
        "tool_choice": {"type": "function", "function": {"name": "on"}},
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "x", "schema": {"type": "object"}},
        },
        "max_completion_tokens": 50,
        "max_tokens": 9,
        "stream": True,
        "stream_options": {"include_usage": True},
        "user": "kitchen",
    }
    completion = parse_completion(body, "r", "http:1.2.3.4")
    request = completion.request
    assert completion.stream and completion.include_usage
    assert request.messages[0] == Message("system", "Be brief.")
    assert request.messages[2].tool_calls == (ToolCall("on", {"x": 1}), ToolCall("off", {}))
    # Results sorted into the order of the calls they answer.
    assert [m.content for m in request.messages[3:]] == ["on done", "off done"]
    assert [t.name for t in request.tools] == ["on"]
    assert request.output_schema == {"type": "object"}
    assert request.max_tokens == 50 and request.client == "http:1.2.3.4/kitchen"
    assert parse_completion(body | {"tool_choice": "none"}, "r", "c").request.tools == ()
    with pytest.raises(BodyError, match="n: only one choice"):
        parse_completion(body | {"n": 2}, "r", "c")


def test_tools_calls_and_results_render_in_the_trained_form() -> None:
    tools = (Tool("HassTurnOn", "Turns on a device", {"type": "object"}),)
    messages = (
        Message("system", "You control a home."),
        Message("user", "turn on the kitchen light"),
        Message("assistant", "", (ToolCall("HassTurnOn", {"name": "Kitchen Light"}),)),
        Message("tool", '{"success": true}'),
    )
    chat = render_messages(messages, tools, "default")
    assert [role for role, _ in chat] == ["system", "user", "assistant", "user"]
    system = chat[0][1]
    assert system.startswith("You control a home.") and "<tools>" in system
    assert '"name": "HassTurnOn"' in system
    assert chat[2][1] == (
        '<tool_call>\n{"name": "HassTurnOn", "arguments": {"name": "Kitchen Light"}}\n</tool_call>'
    )
    # The result is matched to the call by position: it carries the call's name.
    assert chat[3][1] == (
        '<tool_response>\n{"name": "HassTurnOn", "content": {"success": true}}\n</tool_response>'
    )
    assert render_messages((Message("user", "hi"),), (), "default") == (
        ("system", "default"),
        ("user", "hi"),
    )


def test_tool_calls_are_read_back_from_text() -> None:
    tools = (Tool("HassTurnOn", "", {}), Tool("HassTurnOff", "", {}))
    text = (
        'Sure.\n<tool_call>\n{"name": "HassTurnOn", "arguments": {"name": "Kitchen"}}\n</tool_call>'
        '<tool_call>{"name": "HassTurnOff", "arguments": "{\\"area\\": \\"Hall\\"}"}'
    )
    content, calls = parse_tool_calls(text, tools)
    assert content == "Sure."
    assert calls == (
        ToolCall("HassTurnOn", {"name": "Kitchen"}),
        ToolCall("HassTurnOff", {"area": "Hall"}),
    )
    # Unknown tools, broken JSON and non-object arguments stay text.
    for bad in (
        '<tool_call>{"name": "Nope", "arguments": {}}</tool_call>',
        "<tool_call>{not json</tool_call>",
        '<tool_call>{"name": "HassTurnOn", "arguments": [1]}</tool_call>',
    ):
        assert parse_tool_calls(bad, tools) == (bad, ())
    assert parse_tool_calls("no calls", ()) == ("no calls", ())


def test_streamed_text_holds_back_what_may_be_a_call() -> None:
    pieces = ["Hello <", "tool", "_ca", 'll>{"name"', ": 1}</tool_call>"]
    stream = ToolTextFilter()
    shown = "".join(stream.push(p) for p in pieces) + stream.flush()
    assert shown == "Hello "
    stream = ToolTextFilter()
    shown = "".join(stream.push(p) for p in ["a <to", "y> b <"]) + stream.flush()
    assert shown == "a <toy> b <"
