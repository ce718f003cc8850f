"""OpenAI's API (`/v1/models`, `/v1/chat/completions`) over the core: what Home
Assistant's `llama_cpp` integration and OpenAI-style clients call.

Streaming is server-sent events ending in `data: [DONE]`; tool calls carry an id and
their arguments as a JSON string, and end the choice with `finish_reason: "tool_calls"`.
"""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

from assistant.http.models import ModelCard, not_found
from assistant.http.openai_schema import Completion, parse_completion
from assistant.http.relay import Exchange, RefusedError, Relay, Reply
from assistant.http.wire import client_of, new_id, read_json, sse

_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error"}


def openai_error(
    status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    kind = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return web.json_response(body, status=status, headers=headers)


def refusal(err: RefusedError) -> web.Response:
    retry = err.retry_after_s
    headers = {"Retry-After": str(retry)} if retry is not None else None
    return openai_error(err.status, err.error.message, err.error.code, headers)


def _finish(reply: Reply) -> str:
    return {"cancelled": "stop"}.get(reply.finish_reason, reply.finish_reason)


def _calls(rid: str, reply: Reply, *, indexed: bool) -> list[dict[str, Any]]:
    calls = []
    for i, call in enumerate(reply.tool_calls):
        entry: dict[str, Any] = {
            "id": f"call_{rid[-12:]}_{i}",
            "type": "function",
            "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
        }
        calls.append({"index": i, **entry} if indexed else entry)
    return calls


def _timings(reply: Reply) -> dict[str, float]:
    """Not in OpenAI's schema (clients ignore it; llama.cpp's server adds one too): the
    engine's own times, from the core accepting the request."""
    t = reply.timing
    return {"queued_ms": t.queued_ms, "first_token_ms": t.first_token_ms, "total_ms": t.total_ms}


def _usage(reply: Reply) -> dict[str, int]:
    prompt, completion = reply.usage.prompt_tokens, reply.usage.completion_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


class OpenAiApi:
    def __init__(self, relay: Relay, card: ModelCard) -> None:
        self.relay = relay
        self.card = card
        self.created = int(time.time())

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/v1/models", self.models),
            web.post("/v1/chat/completions", self.completions),
        ]

    async def models(self, _request: web.Request) -> web.Response:
        data = [
            {"id": name, "object": "model", "created": self.created, "owned_by": "edge-assistant"}
            for name in self.card.names
        ]
        return web.json_response({"object": "list", "data": data})

    async def completions(self, request: web.Request) -> web.StreamResponse:
        rid = new_id("chatcmpl")
        call = parse_completion(await read_json(request), rid, client_of(request))
        if not self.card.matches(call.model):
            return openai_error(404, not_found(call.model, self.card), "model_not_found")
        if self.relay.full():
            return openai_error(503, "too many requests at once", "busy", {"Retry-After": "1"})
        try:
            exchange = await self.relay.open(call.request)
        except RefusedError as err:
            return refusal(err)
        try:
            if call.stream:
                return await self._stream(request, call, exchange)
            return await self._whole(call, exchange)
        finally:
            exchange.close()

    def _chunk(
        self, call: Completion, delta: dict[str, Any], finish: str | None, **extra: Any
    ) -> bytes:
        return sse(
            {
                "id": call.request.id,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": call.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                **extra,
            }
        )

    async def _stream(
        self, request: web.Request, call: Completion, exchange: Exchange
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        await response.write(self._chunk(call, {"role": "assistant", "content": ""}, None))
        try:
            async for piece in exchange.deltas():
                await response.write(self._chunk(call, {"content": piece}, None))
        except RefusedError as err:
            error = {"message": err.error.message, "type": "server_error", "code": err.error.code}
            await response.write(sse({"error": error}))
            await response.write_eof()
            return response
        reply = exchange.reply
        assert reply is not None
        if reply.tool_calls:
            calls = _calls(call.request.id, reply, indexed=True)
            await response.write(self._chunk(call, {"tool_calls": calls}, None))
        await response.write(self._chunk(call, {}, _finish(reply), timings=_timings(reply)))
        if call.include_usage:
            usage = {
                "id": call.request.id,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": call.model,
                "choices": [],
                "usage": _usage(reply),
            }
            await response.write(sse(usage))
        await response.write(sse("[DONE]"))
        await response.write_eof()
        return response

    async def _whole(self, call: Completion, exchange: Exchange) -> web.Response:
        try:
            async for _ in exchange.deltas():
                pass
        except RefusedError as err:
            return refusal(err)
        reply = exchange.reply
        assert reply is not None
        message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
        if reply.tool_calls:
            message["tool_calls"] = _calls(call.request.id, reply, indexed=False)
        elif message["content"] is None:
            message["content"] = ""
        return web.json_response(
            {
                "id": call.request.id,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": call.model,
                "choices": [{"index": 0, "message": message, "finish_reason": _finish(reply)}],
                "usage": _usage(reply),
                "timings": _timings(reply),
            }
        )
