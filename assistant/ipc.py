"""Framed IPC between the service and its sandboxed worker.

A frame is a 4-byte big-endian body length followed by a UTF-8 JSON object. Both ends
enforce a size limit before reading a body, and a nesting limit before parsing one, so
a compromised worker cannot make the parent allocate or recurse without bound. Data is
never unpickled. Messages are plain dicts here; typed messages belong to the worker.

After a `ProtocolError` the stream is out of step: close the channel. `ChannelClosed`
means the peer closed (or reset) the connection between two frames.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import struct
from typing import Any

MAX_FRAME = 1 << 20
"""Default largest body, in bytes, accepted or sent."""

MAX_DEPTH = 64
"""Default deepest nesting of objects and arrays accepted or sent."""

_HEADER = struct.Struct(">I")
# A JSON string with its escapes; the unrolled form keeps long strings linear.
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_OPENERS_TO_SQUARE = bytes.maketrans(b"{}", b"[]")


class IpcError(Exception):
    """Base class of the IPC errors."""


class ProtocolError(IpcError):
    """A frame broke the protocol: too large, truncated, not UTF-8 JSON, or not an object."""


class FrameTooLargeError(ProtocolError):
    """A frame's body is over the channel's size limit."""


class ChannelClosed(IpcError):  # noqa: N818 -- an event, named by the worker contract
    """The peer closed the channel at a frame boundary (or reset it)."""


def encode_frame(
    obj: dict[str, Any], *, max_frame: int = MAX_FRAME, max_depth: int = MAX_DEPTH
) -> bytes:
    """Return the frame (header + body) for `obj`; raise `ProtocolError` if it is not sendable."""
    if not isinstance(obj, dict):
        raise ProtocolError(f"a frame must be a JSON object, not {type(obj).__name__}")
    _check_depth_of_value(obj, max_depth)
    try:
        body = json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        data = body.encode("utf-8")
    except (TypeError, ValueError) as err:  # UnicodeEncodeError is a ValueError
        raise ProtocolError(f"message is not encodable as JSON: {err}") from err
    if len(data) > max_frame:
        raise FrameTooLargeError(f"frame of {len(data)} bytes is over the limit of {max_frame}")
    return _HEADER.pack(len(data)) + data


def decode_body(body: bytes, *, max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """Parse one frame body into a dict; raise `ProtocolError` on anything else."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ProtocolError(f"frame body is not valid UTF-8: {err}") from err
    _check_depth_of_text(body, max_depth)
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as err:  # JSONDecodeError is a ValueError
        raise ProtocolError(f"frame body is not valid JSON: {err}") from err
    if not isinstance(obj, dict):
        raise ProtocolError(f"frame body must be a JSON object, not {type(obj).__name__}")
    return obj


def body_length(header: bytes, *, max_frame: int = MAX_FRAME) -> int:
    """Return the body length announced by a 4-byte header, checked against `max_frame`."""
    (length,) = _HEADER.unpack(header)
    if length > max_frame:
        raise FrameTooLargeError(
            f"peer announced a frame of {length} bytes; the limit is {max_frame}"
        )
    return int(length)


# --- blocking sockets (the worker) ---------------------------------------------------


def send_frame(
    sock: socket.socket,
    obj: dict[str, Any],
    *,
    max_frame: int = MAX_FRAME,
    max_depth: int = MAX_DEPTH,
) -> None:
    """Send one frame on a blocking stream socket."""
    frame = encode_frame(obj, max_frame=max_frame, max_depth=max_depth)
    try:
        sock.sendall(frame)
    except (BrokenPipeError, ConnectionResetError) as err:
        raise ChannelClosed(f"peer closed the channel: {err}") from err


def recv_frame(
    sock: socket.socket, *, max_frame: int = MAX_FRAME, max_depth: int = MAX_DEPTH
) -> dict[str, Any]:
    """Receive one frame from a blocking stream socket.

    Raises `ChannelClosed` on EOF before a frame starts, `ProtocolError` on EOF inside
    one or on a bad frame. A socket timeout propagates as `TimeoutError`; the stream is
    then out of step and must be closed.
    """
    header = _recv_exactly(sock, _HEADER.size, at_boundary=True)
    body = _recv_exactly(sock, body_length(header, max_frame=max_frame), at_boundary=False)
    return decode_body(body, max_depth=max_depth)


def _recv_exactly(sock: socket.socket, size: int, *, at_boundary: bool) -> bytes:
    buffer = bytearray(size)
    view = memoryview(buffer)
    received = 0
    while received < size:
        try:
            count = sock.recv_into(view[received:])
        except ConnectionResetError as err:
            raise ChannelClosed(f"peer reset the channel: {err}") from err
        if count == 0:
            if at_boundary and received == 0:
                raise ChannelClosed("peer closed the channel")
            what = "header" if at_boundary else "body"
            raise ProtocolError(f"truncated frame: EOF after {received} of {size} {what} bytes")
        received += count
    return bytes(buffer)


# --- asyncio streams (the parent) ----------------------------------------------------


async def read_frame(
    reader: asyncio.StreamReader, *, max_frame: int = MAX_FRAME, max_depth: int = MAX_DEPTH
) -> dict[str, Any]:
    """Read one frame from a stream; same errors as `recv_frame`."""
    try:
        header = await reader.readexactly(_HEADER.size)
    except asyncio.IncompleteReadError as err:
        if not err.partial:
            raise ChannelClosed("peer closed the channel") from err
        raise ProtocolError(f"truncated frame: EOF after {len(err.partial)} header bytes") from err
    except ConnectionResetError as err:
        raise ChannelClosed(f"peer reset the channel: {err}") from err
    length = body_length(header, max_frame=max_frame)
    try:
        body = await reader.readexactly(length)
    except asyncio.IncompleteReadError as err:
        raise ProtocolError(
            f"truncated frame: EOF after {len(err.partial)} of {length} body bytes"
        ) from err
    except ConnectionResetError as err:
        raise ChannelClosed(f"peer reset the channel inside a frame: {err}") from err
    return decode_body(body, max_depth=max_depth)


async def write_frame(
    writer: asyncio.StreamWriter,
    obj: dict[str, Any],
    *,
    max_frame: int = MAX_FRAME,
    max_depth: int = MAX_DEPTH,
) -> None:
    """Write one frame to a stream and wait until it is flushed to the transport."""
    frame = encode_frame(obj, max_frame=max_frame, max_depth=max_depth)
    try:
        writer.write(frame)
        await writer.drain()
    except (BrokenPipeError, ConnectionResetError) as err:
        raise ChannelClosed(f"peer closed the channel: {err}") from err


# --- limits --------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ProtocolError(f"non-standard JSON constant {name}")


def _check_depth_of_text(body: bytes, max_depth: int) -> None:
    """Reject a body nested deeper than `max_depth` before the parser recurses into it."""
    # Drop strings (brackets inside them do not count), keep only brackets, fold both
    # kinds into one, then peel one level of innermost pairs per pass, all in C.
    brackets = _JSON_STRING.sub(b'""', body).translate(_OPENERS_TO_SQUARE, _NOT_BRACKETS)
    for _ in range(max_depth):
        if not brackets:
            return
        peeled = brackets.replace(b"[]", b"")
        if len(peeled) == len(brackets):
            # Only unmatched brackets are left: never valid JSON, and the parser would
            # recurse into a long run of openers before noticing.
            raise ProtocolError("frame body is not valid JSON: unbalanced brackets")
        brackets = peeled
    if b"[]" in brackets:
        raise ProtocolError(f"frame body is nested deeper than {max_depth} levels")


def _check_depth_of_value(obj: object, max_depth: int) -> None:
    """Iteratively check the nesting of an outgoing value (no recursion)."""
    stack: list[tuple[object, int]] = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: list[object] = list(value.values())
        elif isinstance(value, list | tuple):
            children = list(value)
        else:
            continue
        if depth > max_depth:
            raise ProtocolError(f"message is nested deeper than {max_depth} levels")
        stack.extend((child, depth + 1) for child in children)
