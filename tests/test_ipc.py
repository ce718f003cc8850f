"""The framed IPC protocol over real socketpairs, in both the blocking and asyncio forms."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict
from typing import Any, TypeVar

import pytest

from assistant.core.events import GenerationResult, Timing, Usage
from assistant.engine.request import GenerationRequest, SamplingParams
from assistant.errors import RequestError
from assistant.ipc import (
    MAX_DEPTH,
    MAX_FRAME,
    ChannelClosed,
    FrameTooLargeError,
    ProtocolError,
    decode_body,
    encode_frame,
    read_frame,
    recv_frame,
    send_frame,
    write_frame,
)
from assistant.worker.fields import MAX_TEXT
from assistant.worker.protocol import (
    CancelFrame,
    DeltaFrame,
    ErrorFrame,
    FatalFrame,
    GenerateFrame,
    Hello,
    ResultFrame,
    ShutdownFrame,
    StartSpec,
    decode_from_worker,
    decode_startup_reply,
    decode_to_worker,
)

T = TypeVar("T")


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    # A bug that waits for bytes that never come fails the test instead of hanging it.
    left.settimeout(5)
    right.settimeout(5)
    yield left, right
    left.close()
    right.close()


def header(length: int) -> bytes:
    return struct.pack(">I", length)


def with_streams(
    sock: socket.socket, body: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[T]]
) -> T:
    """Run `body` with asyncio streams over `sock` (which then belongs to the streams)."""

    async def main() -> T:
        sock.setblocking(False)
        reader, writer = await asyncio.open_unix_connection(sock=sock)
        try:
            return await asyncio.wait_for(body(reader, writer), timeout=10)
        finally:
            writer.close()

    return asyncio.run(main())


MESSAGES: list[dict[str, Any]] = [
    {},
    {"type": "hello", "pid": 42, "layers": {"seccomp": "active"}},
    {"text": "Grüße, 温度 🌡️ \u202e and \x00 NUL", "n": -1.5e300, "ok": True, "none": None},
    {"tokens": list(range(1000)), "nested": [[{"a": [1, [2, [3]]]}]]},
]


def test_sync_to_async_round_trip(pair: tuple[socket.socket, socket.socket]) -> None:
    left, right = pair
    big = {"blob": "x" * (MAX_FRAME - 100)}  # bigger than the socket buffer: needs a reader

    async def body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        expected = [*MESSAGES, big]

        def send_all() -> None:  # the worker's side: blocking calls in a thread
            for message in expected:
                send_frame(left, message)

        async def read_all() -> list[dict[str, Any]]:
            return [await read_frame(reader) for _ in expected]

        _, received = await asyncio.gather(asyncio.to_thread(send_all), read_all())
        assert received == expected

        def recv_all() -> list[dict[str, Any]]:
            return [recv_frame(left) for _ in expected]

        async def write_all() -> None:
            for message in expected:
                await write_frame(writer, message)

        echoed, _ = await asyncio.gather(asyncio.to_thread(recv_all), write_all())
        assert echoed == expected

    with_streams(right, body)


def test_clean_eof_is_channel_closed_sync(pair: tuple[socket.socket, socket.socket]) -> None:
    left, right = pair
    send_frame(left, {"last": True})
    left.shutdown(socket.SHUT_WR)
    assert recv_frame(right) == {"last": True}
    with pytest.raises(ChannelClosed):
        recv_frame(right)


def test_clean_eof_is_channel_closed_async(pair: tuple[socket.socket, socket.socket]) -> None:
    left, right = pair
    send_frame(left, {"last": True})
    left.close()

    async def body(reader: asyncio.StreamReader, _: asyncio.StreamWriter) -> None:
        assert await read_frame(reader) == {"last": True}
        with pytest.raises(ChannelClosed):
            await read_frame(reader)

    with_streams(right, body)


TRUNCATED = [
    pytest.param(header(10)[:2], id="inside-header"),
    pytest.param(header(10) + b'{"a":', id="inside-body"),
]


@pytest.mark.parametrize("data", TRUNCATED)
def test_truncated_frame_is_a_protocol_error_sync(
    pair: tuple[socket.socket, socket.socket], data: bytes
) -> None:
    left, right = pair
    left.sendall(data)
    left.close()
    with pytest.raises(ProtocolError, match="truncated") as caught:
        recv_frame(right)
    assert not isinstance(caught.value, ChannelClosed)


@pytest.mark.parametrize("data", TRUNCATED)
def test_truncated_frame_is_a_protocol_error_async(
    pair: tuple[socket.socket, socket.socket], data: bytes
) -> None:
    left, right = pair
    left.sendall(data)
    left.close()

    async def body(reader: asyncio.StreamReader, _: asyncio.StreamWriter) -> None:
        with pytest.raises(ProtocolError, match="truncated"):
            await read_frame(reader)

    with_streams(right, body)


def test_oversize_frame_is_refused_on_send(pair: tuple[socket.socket, socket.socket]) -> None:
    left, right = pair
    with pytest.raises(FrameTooLargeError):
        send_frame(left, {"blob": "x" * 100}, max_frame=64)
    with pytest.raises(FrameTooLargeError):
        send_frame(left, {"blob": "x" * MAX_FRAME})

    async def body(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with pytest.raises(FrameTooLargeError):
            await write_frame(writer, {"blob": "é" * 40}, max_frame=64)  # 80 bytes in UTF-8

    with_streams(left, body)
    # Nothing of the refused frames reached the peer: it sees EOF at once.
    assert right.recv(1) == b""


def test_oversize_frame_is_refused_on_receive_before_its_body(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    left, right = pair
    # Announce 2 GiB but send only a little: the reader must refuse on the header alone
    # (waiting for the body would time out; buffering it would need 2 GiB).
    left.sendall(header(2**31) + b"PAYLOAD")
    with pytest.raises(FrameTooLargeError, match="limit"):
        recv_frame(right)
    assert right.recv(16) == b"PAYLOAD"  # the body was left unread

    left.sendall(header(65) + b"{}")
    with pytest.raises(FrameTooLargeError):
        recv_frame(right, max_frame=64)


def test_oversize_frame_is_refused_on_receive_async(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    left, right = pair
    left.sendall(header(MAX_FRAME + 1) + b"PAYLOAD")

    async def body(reader: asyncio.StreamReader, _: asyncio.StreamWriter) -> None:
        with pytest.raises(FrameTooLargeError):
            await read_frame(reader)

    with_streams(right, body)


GARBAGE = [
    pytest.param(b"\xff\xfe{}", "UTF-8", id="not-utf8"),
    pytest.param(b'{"a": "\xed\xa0\x80"}', "UTF-8", id="surrogate-bytes"),
    pytest.param(b"", "JSON", id="empty"),
    pytest.param(b"{'a': 1}", "JSON", id="not-json"),
    pytest.param(b'{"a": 1} trailing', "JSON", id="trailing-data"),
    pytest.param(b'{"a": NaN}', "constant", id="nan"),
    pytest.param(b'{"a": -Infinity}', "constant", id="infinity"),
    pytest.param(b"[1, 2]", "object", id="list"),
    pytest.param(b"42", "object", id="number"),
    pytest.param(b'"text"', "object", id="string"),
    pytest.param(b"null", "object", id="null"),
    pytest.param(b'{"a": [}', "JSON", id="mismatched"),
    pytest.param(b"]]]][[[[", "JSON", id="unbalanced"),
]


@pytest.mark.parametrize(("body", "message"), GARBAGE)
def test_garbage_bodies_are_protocol_errors(
    pair: tuple[socket.socket, socket.socket], body: bytes, message: str
) -> None:
    left, right = pair
    left.sendall(header(len(body)) + body)
    with pytest.raises(ProtocolError, match=message):
        recv_frame(right)


def test_garbage_body_async(pair: tuple[socket.socket, socket.socket]) -> None:
    left, right = pair
    left.sendall(header(4) + b"\x80abc")

    async def body(reader: asyncio.StreamReader, _: asyncio.StreamWriter) -> None:
        with pytest.raises(ProtocolError, match="UTF-8"):
            await read_frame(reader)

    with_streams(right, body)


def nested(depth: int) -> bytes:
    """A JSON object `depth` levels deep, alternating objects and arrays."""
    opening = b'{"a":[' * (depth // 2) + (b'{"a":1}' if depth % 2 else b"1")
    return opening + b"]}" * (depth // 2)


def test_nesting_up_to_the_limit_is_accepted() -> None:
    value: Any = decode_body(nested(MAX_DEPTH))
    for _ in range(MAX_DEPTH // 2):
        value = value["a"][0]
    assert value == 1


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(nested(MAX_DEPTH + 1), id="limit+1"),
        pytest.param(nested(400_000), id="400k-levels"),
        pytest.param(b"[" * (MAX_FRAME - 1) + b"]", id="a-megabyte-of-openers"),
        pytest.param(b"[" * 100_000, id="unclosed"),
    ],
)
def test_deep_nesting_is_refused_without_recursion(body: bytes) -> None:
    with pytest.raises(ProtocolError, match=r"deeper|JSON"):
        decode_body(body)


def test_brackets_inside_strings_do_not_count() -> None:
    text = '[[{{"\\' * 5000 + "]]"  # brackets, quotes and backslashes, escaped in JSON
    body = json.dumps({"s": text, "t": [text]}).encode()
    assert decode_body(body) == {"s": text, "t": [text]}


def test_depth_limit_is_per_channel(pair: tuple[socket.socket, socket.socket]) -> None:
    left, right = pair
    send_frame(left, {"a": {"b": {}}}, max_depth=3)
    with pytest.raises(ProtocolError, match="deeper"):
        recv_frame(right, max_depth=2)


def test_deep_outgoing_message_is_refused_without_recursion() -> None:
    value: dict[str, Any] = {}
    for _ in range(100_000):
        value = {"a": value}
    with pytest.raises(ProtocolError, match="deeper"):
        encode_frame(value)


@pytest.mark.parametrize(
    "message",
    [
        pytest.param([1, 2], id="not-a-dict"),
        pytest.param({"x": object()}, id="not-serialisable"),
        pytest.param({"x": float("nan")}, id="nan"),
        pytest.param({"x": "\ud800"}, id="lone-surrogate"),
    ],
)
def test_unencodable_messages_are_protocol_errors(message: Any) -> None:
    with pytest.raises(ProtocolError):
        encode_frame(message)


def test_peer_gone_while_sending_is_channel_closed(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    left, right = pair
    right.close()
    with pytest.raises(ChannelClosed):
        send_frame(left, {"blob": "x" * 100_000})


# --- typed messages (assistant.worker.protocol) ----------------------------------------

SAMPLING = SamplingParams(temperature=0.5, top_k=40, top_p=0.9, repetition_penalty=1.1, seed=7)
RESULT = GenerationResult("r1", "Paris.", "stop", Usage(12, 3), Timing(1.0, 20.5, 40.0, 75.0))
EVERY_FRAME: list[Any] = [
    StartSpec("/models/m", 2, 2048, 4, 1 << 26, memory_bytes=1 << 30, debug_hang_text="x"),
    Hello(42, "tiny", 2048, 12.5, {"enabled": True, "layers": {"uid": "active"}}),
    GenerateFrame(GenerationRequest("r1", (("system", "Be brief."), ("user", "Hi")), 8, SAMPLING)),
    GenerateFrame(
        GenerationRequest("r2", (("user", "Hi"),), 8, SamplingParams(), ("\n\n",), priority=-10)
    ),
    CancelFrame("r1"),
    ShutdownFrame(),
    DeltaFrame("r1", 3, " Par"),
    ResultFrame(RESULT),
    ErrorFrame("r1", "prompt_too_long", "the prompt needs 900 tokens; the limit is 512"),
    FatalFrame("ModelError: no prepared model"),
]


@pytest.mark.parametrize("frame", EVERY_FRAME, ids=lambda f: type(f).__name__)
def test_every_frame_survives_a_real_channel(
    pair: tuple[socket.socket, socket.socket], frame: Any
) -> None:
    left, right = pair
    send_frame(left, frame.to_payload())
    assert type(frame).from_payload(recv_frame(right)) == frame


def test_each_side_decodes_only_the_frames_meant_for_it() -> None:
    for frame in EVERY_FRAME:
        payload = frame.to_payload()
        if isinstance(frame, GenerateFrame | CancelFrame | ShutdownFrame):
            assert decode_to_worker(payload) == frame
            with pytest.raises(ProtocolError, match="unexpected frame type"):
                decode_from_worker(payload)
        elif isinstance(frame, DeltaFrame | ResultFrame | ErrorFrame | FatalFrame):
            assert decode_from_worker(payload) == frame
            with pytest.raises(ProtocolError, match="unexpected frame type"):
                decode_to_worker(payload)
    assert decode_startup_reply(EVERY_FRAME[1].to_payload()) == EVERY_FRAME[1]
    assert decode_startup_reply(EVERY_FRAME[-1].to_payload()) == EVERY_FRAME[-1]


def _with(frame: Any, **changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = frame.to_payload()
    payload.update(changes)
    return payload


BAD_FRAMES = [
    pytest.param(_with(EVERY_FRAME[0], threads="2"), "threads", id="start-threads-string"),
    pytest.param(_with(EVERY_FRAME[0], sandbox=1), "sandbox", id="start-sandbox-int"),
    pytest.param(_with(EVERY_FRAME[1], pid=True), "pid", id="hello-pid-bool"),
    pytest.param(_with(EVERY_FRAME[1], sandbox=[]), "sandbox", id="hello-sandbox-list"),
    pytest.param(_with(EVERY_FRAME[2], messages=[["user"]]), "pair", id="gen-short-pair"),
    pytest.param(_with(EVERY_FRAME[2], messages=[["user", 1]]), "pair", id="gen-int-text"),
    pytest.param(_with(EVERY_FRAME[2], messages=[["u", "x"]] * 1025), "1024", id="gen-many"),
    pytest.param(_with(EVERY_FRAME[2], max_tokens=-1), "max_tokens", id="gen-negative"),
    pytest.param(_with(EVERY_FRAME[2], stop=["x" * 257]), "stop", id="gen-long-stop"),
    pytest.param(_with(EVERY_FRAME[2], priority=11), "priority", id="gen-priority-11"),
    pytest.param(
        _with(EVERY_FRAME[2], sampling={**asdict(SAMPLING), "top_p": 1.5}), "top_p", id="top-p"
    ),
    pytest.param(
        _with(EVERY_FRAME[2], sampling={**asdict(SAMPLING), "seed": 1 << 70}), "seed", id="seed"
    ),
    pytest.param(_with(EVERY_FRAME[4], id=None), "id", id="cancel-no-id"),
    pytest.param(_with(EVERY_FRAME[6], id="x" * 65), "id", id="delta-long-id"),
    pytest.param(_with(EVERY_FRAME[6], seq=-1), "seq", id="delta-negative-seq"),
    pytest.param(_with(EVERY_FRAME[6], text="x" * (MAX_TEXT + 1)), "text", id="delta-huge"),
    pytest.param(_with(EVERY_FRAME[7], finish_reason="done"), "finish_reason", id="reason"),
    pytest.param(_with(EVERY_FRAME[7], total_ms=-1.0), "total_ms", id="result-negative"),
    pytest.param(_with(EVERY_FRAME[8], code="busy"), "code", id="error-foreign-code"),
    pytest.param({"type": "reboot"}, "unexpected", id="unknown-type"),
    pytest.param({"id": "r1"}, "unexpected", id="no-type"),
]


@pytest.mark.parametrize(("payload", "field"), BAD_FRAMES)
def test_bad_fields_are_protocol_errors(payload: dict[str, Any], field: str) -> None:
    kind = payload.get("type")
    with pytest.raises(ProtocolError, match=field):
        if kind == "start":
            StartSpec.from_payload(payload)
        elif kind == "hello":
            Hello.from_payload(payload)
        elif kind in ("generate", "cancel"):
            decode_to_worker(payload)
        else:
            decode_from_worker(payload)


def test_error_codes_outside_the_workers_set_become_engine_failure() -> None:
    frame = ErrorFrame.from_error("r1", RequestError("busy", "no"))
    assert frame == ErrorFrame("r1", "engine_failure", "no")
    assert frame.to_error().code == "engine_failure"
