"""Tool calls read back from a model's text, in the form `tool_prompt` asks for.

Until decoding is constrained to the tools' schemas, a call is whatever the model wrote
between `<tool_call>` and `</tool_call>` (a missing close tag at the very end counts: the
reply may stop right after the JSON). Only a JSON object naming an offered tool, with an
object of arguments, becomes a call; anything else stays text, so a client never gets a
call it cannot run.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from assistant.core.events import ToolCall
from assistant.core.request import Tool
from assistant.core.tool_prompt import TOOL_CALL_CLOSE, TOOL_CALL_OPEN

MAX_CALLS = 16  # calls taken from one reply; more is a runaway model, not a plan


def _decode_call(body: str, names: frozenset[str]) -> ToolCall | None:
    try:
        data: Any = json.loads(body)
    except ValueError:
        return None
    if isinstance(data, list) and len(data) == 1:  # SmolLM2's trained form: a list
        data = data[0]
    if not isinstance(data, dict) or data.get("name") not in names:
        return None
    arguments = data.get("arguments", data.get("parameters", {}))
    if isinstance(arguments, str):  # some models write the arguments as a JSON string
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return None
    if not isinstance(arguments, dict):
        return None
    return ToolCall(str(data["name"]), arguments)


def parse_tool_calls(text: str, tools: Sequence[Tool]) -> tuple[str, tuple[ToolCall, ...]]:
    """(the text outside the calls, the calls) of a model's reply."""
    names = frozenset(t.name for t in tools)
    if not names or TOOL_CALL_OPEN not in text:
        return text, ()
    calls: list[ToolCall] = []
    kept: list[str] = []
    rest = text
    while (start := rest.find(TOOL_CALL_OPEN)) >= 0 and len(calls) < MAX_CALLS:
        end = rest.find(TOOL_CALL_CLOSE, start)
        body_end = end if end >= 0 else len(rest)
        call = _decode_call(rest[start + len(TOOL_CALL_OPEN) : body_end].strip(), names)
        after = body_end + len(TOOL_CALL_CLOSE) if end >= 0 else len(rest)
        if call is None:
            kept.append(rest[:after])
        else:
            kept.append(rest[:start])
            calls.append(call)
        rest = rest[after:]
    kept.append(rest)
    return "".join(kept).strip() if calls else text, tuple(calls)


class ToolTextFilter:
    """Streams a reply's text while holding back anything that may be a tool call: from
    a `<tool_call>` tag on, nothing more is streamed (the final reply carries the calls
    and the text that was not a call), and a trailing piece that could still grow into
    the tag waits for the next delta."""

    def __init__(self) -> None:
        self._held = ""
        self.in_call = False

    def push(self, text: str) -> str:
        if self.in_call:
            return ""
        self._held += text
        at = self._held.find(TOOL_CALL_OPEN)
        if at >= 0:
            self.in_call = True
            out, self._held = self._held[:at], ""
            return out
        keep = _partial_tag_length(self._held)
        out = self._held[: len(self._held) - keep]
        self._held = self._held[len(self._held) - keep :]
        return out

    def flush(self) -> str:
        """What is still held at the end of a reply that made no call."""
        out, self._held = ("" if self.in_call else self._held), ""
        return out


def _partial_tag_length(text: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of the open tag."""
    for length in range(min(len(text), len(TOOL_CALL_OPEN) - 1), 0, -1):
        if TOOL_CALL_OPEN.startswith(text[-length:]):
            return length
    return 0
