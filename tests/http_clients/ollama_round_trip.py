"""Speak to the service with the `ollama` client found on sys.path and print what came
back as JSON. Run as a program so that the same steps run under ollama 0.4.7 (Home
Assistant 2025.4's pin, from its own folder on PYTHONPATH) and the newest release.

The tool call comes from a prompt the test controls: the history shows the model calling
the tool for this request, and greedy decoding repeats that call. Only its structure is
checked, never the tiny model's words.
"""

from __future__ import annotations

import json
import sys
from importlib.metadata import version
from typing import Any

import ollama

MODEL = "edge-assistant:latest"
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "HassTurnOn",
            "description": "Turns on/opens a device or entity",
            "parameters": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "area": {"type": "string"}},
                "required": [],
            },
        },
    }
]
CALL = {"function": {"name": "HassTurnOn", "arguments": {"name": "Kitchen Light"}}}
OPTIONS = {"temperature": 0.0, "num_predict": 48, "num_ctx": 8192.0}


def calls_of(message: Any) -> list[dict[str, Any]]:
    return [
        {"name": c.function.name, "arguments": dict(c.function.arguments)}
        for c in (message.tool_calls or [])
    ]


def main(host: str) -> None:
    client = ollama.Client(host=host, timeout=60)
    out: dict[str, Any] = {"version": version("ollama"), "path": ollama.__file__}
    out["models"] = [m.model for m in client.list().models]

    whole = client.chat(
        MODEL,
        [{"role": "user", "content": "What is the capital of France?"}],
        options={"num_predict": 8},
        keep_alive="-1.0s",
    )
    out["whole"] = {
        "role": whole.message.role,
        "content": whole.message.content,
        "done": whole.done,
    }

    chunks = list(
        client.chat(
            MODEL, [{"role": "user", "content": "Say hi."}], stream=True, options={"num_predict": 8}
        )
    )
    out["stream"] = {
        "chunks": len(chunks),
        "text": "".join(c.message.content or "" for c in chunks),
        "done": [c.done for c in chunks],
        "done_reason": chunks[-1].done_reason,
        "eval_count": chunks[-1].eval_count,
    }

    history: list[dict[str, Any]] = [
        {"role": "user", "content": "turn on the kitchen light"},
        {"role": "assistant", "content": "", "tool_calls": [CALL]},
        {"role": "user", "content": "Again: turn on the kitchen light"},
    ]
    streamed_calls: list[dict[str, Any]] = []
    for chunk in client.chat(MODEL, history, tools=TOOLS, stream=True, options=OPTIONS):
        streamed_calls += calls_of(chunk.message)
    out["tool_calls"] = streamed_calls

    history += [
        {"role": "assistant", "content": "", "tool_calls": [CALL]},
        {"role": "tool", "content": json.dumps({"response_type": "action_done", "success": True})},
    ]
    answer = client.chat(MODEL, history, tools=TOOLS, options=OPTIONS)
    out["after_tool"] = {"content_type": type(answer.message.content).__name__, "done": answer.done}
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
