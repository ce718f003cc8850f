"""The page's try-it box: one prompt through the core, streamed back as NDJSON lines
(`start`, `delta`, `tool_call`, then one `final`), cancellable by the page that started it.

The page reads the stream with fetch(); closing it (a reload, the Cancel button's abort)
cancels the request in the worker, like a dropped HTTP client.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from aiohttp import web

from assistant.core.api import CoreApi, Handle
from assistant.core.events import Delta, Finished, ToolCall
from assistant.core.request import Request, Tool
from assistant.core.tool_calls import ToolTextFilter, parse_tool_calls
from assistant.core.tool_prompt import TOOL_CALL_CLOSE

LOG = logging.getLogger(__name__)
MAX_TEXT = 4000  # characters of a try-it prompt
MAX_LIVE = 4  # try-it requests running at once from all open pages
_NAME = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
# Two of Home Assistant's Assist intents, so the box can show a tool call on demand.
DEMO_TOOLS = (
    Tool("HassTurnOn", "Turns on/opens a device or entity", _NAME),
    Tool("HassTurnOff", "Turns off/closes a device or entity", _NAME),
)


class TryBodyError(ValueError):
    """A try-it body the page should not have sent."""


def parse_try(body: Any, peer: str) -> Request:
    """Validate the page's JSON body: {"text": str, "max_tokens"?: int, "tools"?: bool}."""
    if not isinstance(body, dict):
        raise TryBodyError("the body must be a JSON object")
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        raise TryBodyError("text must be a non-empty string")
    if len(text) > MAX_TEXT:
        raise TryBodyError(f"text is longer than {MAX_TEXT} characters")
    max_tokens = body.get("max_tokens")
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
    ):
        raise TryBodyError("max_tokens must be a positive integer")
    tools = body.get("tools", False)
    if not isinstance(tools, bool):
        raise TryBodyError("tools must be true or false")
    return Request(
        id=f"page-{uuid.uuid4().hex[:12]}",
        front_end="page",
        client=f"page:{peer}",
        text=text,
        max_tokens=max_tokens,
        tools=DEMO_TOOLS if tools else (),
    )


def _line(kind: str, **fields: Any) -> bytes:
    return json.dumps({"type": kind, **fields}).encode() + b"\n"


def _tool_line(call: ToolCall) -> bytes:
    return _line("tool_call", name=call.name, arguments=call.arguments)


def _final_line(event: Finished, calls: int) -> bytes:
    result, error = event.result, event.error
    if result is None:
        err = {"code": error.code, "message": error.message} if error else None
        return _line("final", id=event.id, finish_reason=None, error=err)
    reason = "tool_calls" if calls and result.finish_reason == "stop" else result.finish_reason
    return _line(
        "final",
        id=event.id,
        finish_reason=reason,
        usage={
            "prompt_tokens": result.usage.prompt_tokens,
            "completion_tokens": result.usage.completion_tokens,
        },
        timing={
            "first_token_ms": round(result.timing.first_token_ms, 1),
            "total_ms": round(result.timing.total_ms, 1),
            "tokens_per_s": round(result.timing.tokens_per_s, 1),
        },
        error=None,
    )


class TryStream:
    """The core's events as the page's lines. With tools offered, the call markup is held
    back from the text (as the HTTP API does) and each call is shown as soon as its
    closing tag arrives, not only with the final."""

    def __init__(self, tools: tuple[Tool, ...]) -> None:
        self._tools = tools
        self._filter = ToolTextFilter() if tools else None
        self._text = ""
        self._sent = 0  # tool calls already shown

    def delta(self, text: str) -> list[bytes]:
        if self._filter is None:
            return [_line("delta", text=text)]
        self._text += text
        shown = self._filter.push(text)
        lines = [_line("delta", text=shown)] if shown else []
        end = self._text.rfind(TOOL_CALL_CLOSE)
        if self._filter.in_call and end >= 0:
            lines += self._new_calls(self._text[: end + len(TOOL_CALL_CLOSE)])
        return lines

    def final(self, event: Finished) -> list[bytes]:
        lines: list[bytes] = []
        if self._filter is not None and (rest := self._filter.flush()):
            lines.append(_line("delta", text=rest))
        result = event.result
        if result is not None and result.tool_calls:  # the core's own (constrained) calls
            lines += [_tool_line(call) for call in result.tool_calls[self._sent :]]
            self._sent = max(self._sent, len(result.tool_calls))
        elif result is not None and self._tools:
            lines += self._new_calls(result.text)
        return [*lines, _final_line(event, self._sent)]

    def _new_calls(self, text: str) -> list[bytes]:
        _, calls = parse_tool_calls(text, self._tools)
        new = calls[self._sent :]
        self._sent = max(self._sent, len(calls))
        return [_tool_line(call) for call in new]


class TryIt:
    def __init__(self, core: CoreApi) -> None:
        self._core = core
        self._live: dict[str, Handle] = {}  # only these may be cancelled from the page

    async def start(self, request: web.Request) -> web.StreamResponse:
        if len(self._live) >= MAX_LIVE:
            raise web.HTTPTooManyRequests(text="too many try-it requests are running")
        try:
            ask = parse_try(await request.json(), request.remote or "unknown")
        except (ValueError, UnicodeDecodeError) as err:  # JSON errors are ValueErrors
            message = str(err) if isinstance(err, TryBodyError) else "the body is not JSON"
            raise web.HTTPBadRequest(text=message) from None
        handle = self._core.submit(ask)
        self._live[handle.id] = handle
        response = web.StreamResponse(
            headers={"Content-Type": "application/x-ndjson", "Cache-Control": "no-store"}
        )
        finished = False
        try:
            await self._stream(request, response, handle, ask.tools)
            finished = True
        except ConnectionResetError:
            LOG.info("try-it %s: the page went away; cancelling", handle.id)
        finally:
            self._live.pop(handle.id, None)
            if not finished:  # the page went away (or a write failed): stop generating
                handle.cancel()
        return response

    async def _stream(
        self,
        request: web.Request,
        response: web.StreamResponse,
        handle: Handle,
        tools: tuple[Tool, ...],
    ) -> None:
        await response.prepare(request)
        await response.write(_line("start", id=handle.id))
        stream = TryStream(tools)
        async for event in handle.events():
            lines = stream.delta(event.text) if isinstance(event, Delta) else stream.final(event)
            for line in lines:
                await response.write(line)
        await response.write_eof()

    async def cancel(self, request: web.Request) -> web.Response:
        handle = self._live.get(request.match_info["id"])
        if handle is None:
            raise web.HTTPNotFound(text="no running try-it request with that id")
        return web.json_response({"cancelled": handle.cancel()})
