"""Ollama's API (`/api/...`) over the core: what Home Assistant's `ollama` integration
calls (tags, ps, pull, chat), plus show, version and generate.

Chat and generate stream NDJSON by default (`"stream": false` for one object). A tool
call goes out as its own line before the last one, with `arguments` as a JSON object
(a string makes Home Assistant's client fail validation).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from assistant.http.body import BodyError, text
from assistant.http.models import ModelCard, not_found
from assistant.http.ollama_schema import Call, parse_chat, parse_generate
from assistant.http.relay import Exchange, RefusedError, Relay, Reply
from assistant.http.wire import client_of, line, new_id, now_iso, read_json

# The Ollama API version this server follows (clients such as Open WebUI check it).
OLLAMA_API_VERSION = "0.6.0"
FAR_FUTURE = "2318-01-01T00:00:00Z"
STATS_WAIT_S = 10.0  # /api/ps expires_at: the model is never unloaded


def ollama_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def refusal(err: RefusedError) -> web.Response:
    retry = err.retry_after_s
    headers = {"Retry-After": str(retry)} if retry is not None else None
    return ollama_error(err.status, err.error.message, headers)


def _durations(reply: Reply) -> dict[str, Any]:
    timing, ns = reply.timing, 1_000_000
    return {
        "total_duration": round(timing.total_ms * ns),
        "load_duration": 0,
        "prompt_eval_count": reply.usage.prompt_tokens,
        "prompt_eval_duration": round(max(timing.first_token_ms - timing.queued_ms, 0) * ns),
        "eval_count": reply.usage.completion_tokens,
        "eval_duration": round(max(timing.total_ms - timing.first_token_ms, 0) * ns),
    }


def _message(content: str, reply: Reply | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if reply is not None and reply.tool_calls:
        message["tool_calls"] = [
            {"function": {"name": c.name, "arguments": c.arguments}} for c in reply.tool_calls
        ]
    return message


def _done_reason(reply: Reply) -> str:
    # Ollama reports a reply that made tool calls as "stop"; cancelled stays cancelled.
    return "stop" if reply.finish_reason == "tool_calls" else reply.finish_reason


class OllamaApi:
    def __init__(self, relay: Relay, card: ModelCard, version: str) -> None:
        self.relay = relay
        self.card = card
        self.version = version

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/api/tags", self.tags),
            web.get("/api/ps", self.ps),
            web.get("/api/version", self.get_version),
            web.post("/api/show", self.show),
            web.post("/api/pull", self.pull),
            web.post("/api/chat", self.chat),
            web.post("/api/generate", self.generate),
            web.get("/api/edge/stats", self.stats),
        ]

    async def tags(self, _request: web.Request) -> web.Response:
        return web.json_response({"models": self.card.ollama_entries()})

    async def ps(self, _request: web.Request) -> web.Response:
        models = [
            {**entry, "expires_at": FAR_FUTURE, "size_vram": 0}
            | {"context_length": self.card.context_tokens}
            for entry in self.card.ollama_entries()
        ]
        return web.json_response({"models": models})

    async def get_version(self, _request: web.Request) -> web.Response:
        return web.json_response({"version": OLLAMA_API_VERSION, "edge_assistant": self.version})

    async def stats(self, request: web.Request) -> web.Response:
        """The counters; `?stops_after=N` first waits (up to 10 s) until more than N
        requests whose client left have ended (a long poll, for tests and tools)."""
        after = request.query.get("stops_after")
        if after is not None:
            if not after.isdigit():
                raise BodyError("stops_after: must be a whole number")
            await self.relay.stops_after(int(after), STATS_WAIT_S)
        return web.json_response(self.relay.stats.to_dict())

    def _model(self, data: dict[str, Any]) -> str:
        """The model a body names ("model", or the older "name"); 404 when not ours."""
        name = text(data, "model") or text(data, "name")
        if not name:
            raise BodyError("model: required")
        if not self.card.matches(name):
            raise BodyError(not_found(name, self.card), 404)
        return name

    async def show(self, request: web.Request) -> web.Response:
        self._model(await read_json(request))
        card = self.card
        return web.json_response(
            {
                "modelfile": f"# {card.id}, served by edge-assistant\n",
                "parameters": "",
                "template": "",
                "details": card.details(),
                "model_info": {
                    "general.architecture": card.family,
                    "general.parameter_count": card.params,
                    f"{card.family}.context_length": card.context_tokens,
                },
                "capabilities": ["completion", "tools"],
                "modified_at": card.modified_at,
            }
        )

    async def pull(self, request: web.Request) -> web.StreamResponse:
        """Nothing is ever downloaded: success for our model, Ollama's error otherwise."""
        data = await read_json(request)
        self._model(data)
        if data.get("stream") is False:
            return web.json_response({"status": "success"})
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        await response.write(line({"status": "success"}))
        await response.write_eof()
        return response

    async def chat(self, request: web.Request) -> web.StreamResponse:
        call = parse_chat(await read_json(request), new_id("chat"), client_of(request))
        self._model({"model": call.model})

        def final(reply: Reply) -> dict[str, Any]:
            return {"message": _message("", None)} | self._end(reply)

        return await self._answer(request, call, "message", final)

    async def generate(self, request: web.Request) -> web.StreamResponse:
        parsed = parse_generate(await read_json(request), new_id("gen"), client_of(request))
        if isinstance(parsed, str):  # an empty prompt: Ollama's "load the model"
            self._model({"model": parsed})
            return web.json_response(
                {
                    "model": parsed,
                    "created_at": now_iso(),
                    "response": "",
                    "done": True,
                    "done_reason": "load",
                }
            )
        self._model({"model": parsed.model})
        return await self._answer(
            request, parsed, "response", lambda r: {"response": ""} | self._end(r)
        )

    def _end(self, reply: Reply) -> dict[str, Any]:
        return {"done": True, "done_reason": _done_reason(reply)} | _durations(reply)

    async def _answer(
        self,
        request: web.Request,
        call: Call,
        field: str,
        final: Callable[[Reply], dict[str, Any]],
    ) -> web.StreamResponse:
        if self.relay.full():
            return ollama_error(503, "too many requests at once", {"Retry-After": "1"})
        try:
            exchange = await self.relay.open(call.request)
        except RefusedError as err:
            return refusal(err)
        try:
            if call.stream:
                return await self._stream(request, call, exchange, field, final)
            return await self._whole(call, exchange, field, final)
        finally:
            exchange.close()

    def _chunk(self, model: str, field: str, content: str) -> dict[str, Any]:
        value: Any = _message(content) if field == "message" else content
        return {"model": model, "created_at": now_iso(), field: value, "done": False}

    async def _stream(
        self,
        request: web.Request,
        call: Call,
        exchange: Exchange,
        field: str,
        final: Callable[[Reply], dict[str, Any]],
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        try:
            async for piece in exchange.deltas():
                await response.write(line(self._chunk(call.model, field, piece)))
        except RefusedError as err:
            await response.write(line({"error": err.error.message}))
            await response.write_eof()
            return response
        reply = exchange.reply
        assert reply is not None
        if reply.tool_calls:
            chunk = self._chunk(call.model, field, "")
            chunk["message"] = _message("", reply)
            await response.write(line(chunk))
        end = {"model": call.model, "created_at": now_iso()} | final(reply)
        await response.write(line(end))
        await response.write_eof()
        return response

    async def _whole(
        self,
        call: Call,
        exchange: Exchange,
        field: str,
        final: Callable[[Reply], dict[str, Any]],
    ) -> web.Response:
        try:
            async for _ in exchange.deltas():
                pass
        except RefusedError as err:
            return refusal(err)
        reply = exchange.reply
        assert reply is not None
        body = {"model": call.model, "created_at": now_iso()} | final(reply)
        body[field] = _message(reply.text, reply) if field == "message" else reply.text
        return web.json_response(body)
