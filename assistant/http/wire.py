"""Reading a request off the wire: the body within its limits, who sent it, an id."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from assistant.http.body import BodyError, parse_json

BODY_LIMIT = 4 * 1024 * 1024  # bytes; HA's request for a large home is ~50 KB
BODY_READ_S = 10.0  # the whole body must arrive within this (slow senders are cut off)


async def read_json(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object; 413 over the limit, 408 when it trickles in too slowly."""
    if request.content_length is not None and request.content_length > BODY_LIMIT:
        raise web.HTTPRequestEntityTooLarge(max_size=BODY_LIMIT, actual_size=request.content_length)
    try:
        async with asyncio.timeout(BODY_READ_S):
            raw = await request.read()  # aiohttp stops at client_max_size (413)
    except TimeoutError as err:
        raise BodyError(f"the body did not arrive within {BODY_READ_S:g} s", 408) from err
    if not raw.strip():
        raise BodyError("the body is empty; a JSON object is required")
    return parse_json(raw)


def client_of(request: web.Request) -> str:
    """Who asked, for per-client rate limits: the peer's address."""
    return f"http:{request.remote or 'unknown'}"


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def line(payload: dict[str, Any]) -> bytes:
    """One NDJSON line."""
    return json.dumps(payload, ensure_ascii=False).encode() + b"\n"


def sse(payload: dict[str, Any] | str) -> bytes:
    """One server-sent event's data."""
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {data}\n\n".encode()
