"""The Wyoming "handle" service of the real service, spoken to with the `wyoming`
package's own client (what Home Assistant's `wyoming` integration uses).

The add-on's announcement goes to the Supervisor API, which cannot exist here: a small
local HTTP test double (standard library only) stands in for it, reached through
`EDGE_ASSISTANT_SUPERVISOR_URL`; it records what the service posts.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from assistant.supervisor_api import wyoming_uri
from tests.conftest import Broker, free_port
from tests.mqtt_helpers import WAIT_S, Client, ServiceProcess, final_for, running, unique

with warnings.catch_warnings():
    # wyoming.info imports audioop, deprecated since Python 3.11 (see wyoming_server.py).
    warnings.filterwarnings("ignore", "'audioop' is deprecated", DeprecationWarning)
    from wyoming.asr import Transcript
    from wyoming.client import AsyncTcpClient
    from wyoming.event import Event
    from wyoming.handle import Handled, NotHandled
    from wyoming.info import Describe, Info

    from assistant.voice.wyoming_server import conversation_key, describe

from assistant.voice.languages import model_languages

TOKEN = "supervisor-token-for-the-test-double"


@dataclass
class SupervisorDouble:
    """Records the requests it gets; answers like the Supervisor's discovery endpoint."""

    requests: list[tuple[str, str, dict[str, str], Any]] = field(default_factory=list)
    received: threading.Event = field(default_factory=threading.Event)


@pytest.fixture(scope="module")
def supervisor() -> Iterator[tuple[SupervisorDouble, str]]:
    double = SupervisorDouble()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length))
            double.requests.append(("POST", self.path, dict(self.headers), body))
            double.received.set()
            answer = json.dumps({"result": "ok", "data": {"uuid": "abc"}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield double, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def wyoming_service(
    workdir: Path, broker: Broker, model: Path, port: int, env: dict[str, str] | None = None
) -> ServiceProcess:
    return ServiceProcess(
        workdir,
        broker.port,
        model,
        # Greedy: with sampling the tiny random model sometimes ends at once, and an empty
        # reply is (rightly) not-handled, which made these tests flaky.
        config={
            "wyoming": {"enabled": True, "host": "127.0.0.1", "port": port},
            "engine": {"temperature": 0},
        },
        env=env,
    )


@pytest.fixture(scope="module")
def svc(
    mosquitto: Broker,
    tiny_model_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
    supervisor: tuple[SupervisorDouble, str],
) -> Iterator[ServiceProcess]:
    env = {"SUPERVISOR_TOKEN": TOKEN, "EDGE_ASSISTANT_SUPERVISOR_URL": supervisor[1]}
    service = wyoming_service(
        tmp_path_factory.mktemp("wyoming"), mosquitto, tiny_model_dir, free_port(), env
    )
    watcher = Client(mosquitto.host, mosquitto.port)
    try:
        with running(service, watcher):
            yield service
    finally:
        watcher.close()


def port_of(svc: ServiceProcess) -> int:
    return int(svc.settings["wyoming"]["port"])


async def exchange(port: int, *events: Event) -> list[Event]:
    """Send events, read one answer per event (bounded wait)."""
    answers = []
    async with AsyncTcpClient("127.0.0.1", port) as client:
        for event in events:
            await client.write_event(event)
            answer = await asyncio.wait_for(client.read_event(), WAIT_S)
            assert answer is not None, "the server closed the connection"
            answers.append(answer)
    return answers


def ask(port: int, event: Event) -> Event:
    return asyncio.run(exchange(port, event))[0]


def test_describe_lists_a_handle_program(svc: ServiceProcess) -> None:
    answer = ask(port_of(svc), Describe().event())
    assert Info.is_type(answer.type)
    info = Info.from_event(answer)
    assert len(info.handle) == 1 and not info.asr and not info.tts
    program = info.handle[0]
    assert program.installed and program.name == "edge-assistant"
    assert [m.name for m in program.models] == ["tiny-chat-fp32"]
    assert all(m.installed for m in program.models)
    # Home Assistant offers an agent only for the languages listed: never none. The test
    # model is of no known family, so it is announced as English.
    assert [m.languages for m in program.models] == [["en"]]


def test_the_model_family_gives_the_announced_languages() -> None:
    assert model_languages("smollm2-135m-instruct-int8") == ("en",)
    assert "de" in model_languages("Llama-3.2-1B-Instruct-int8")
    assert "zh" in model_languages("qwen2.5-0.5b-instruct-int8")
    assert model_languages("my-own-model") == ("en",)
    info = describe("1.0", "qwen2.5-0.5b-instruct-int8", ("de", "en"))
    assert [m.languages for m in info.handle[0].models] == [["de", "en"]]


def test_transcript_is_handled_with_the_reply(svc: ServiceProcess) -> None:
    context = {"conversation_id": unique("conv"), "device_id": "satellite-1"}
    answer = ask(port_of(svc), Transcript("what is the time", context, "en").event())
    assert Handled.is_type(answer.type), answer
    handled = Handled.from_event(answer)
    assert handled.text and handled.text.strip()
    assert handled.context == context


def test_describe_then_several_transcripts_on_one_connection(svc: ServiceProcess) -> None:
    answers = asyncio.run(
        exchange(
            port_of(svc),
            Describe().event(),
            Transcript("one").event(),
            Transcript("two").event(),
        )
    )
    assert [a.type for a in answers] == ["info", "handled", "handled"]


def test_an_error_is_not_handled_with_its_message(svc: ServiceProcess) -> None:
    answer = ask(port_of(svc), Transcript("word " * 3000).event())
    assert NotHandled.is_type(answer.type), answer
    text = NotHandled.from_event(answer).text or ""
    assert text.startswith("Sorry, that is too long for me to answer.")
    assert "window" in text  # the error's own message follows the apology
    empty = ask(port_of(svc), Event("transcript", {"context": {}}))
    assert NotHandled.is_type(empty.type)


def test_the_conversation_id_is_the_session_key(mosquitto: Broker, svc: ServiceProcess) -> None:
    conversation = unique("conv")
    key = conversation_key({"conversation_id": conversation})
    assert key == conversation
    client = Client(mosquitto.host, mosquitto.port)
    try:
        client.subscribe(f"{svc.base}/reply/#", retained=False)

        def prompt_tokens(session: str) -> int:
            rid = unique("r")
            client.publish(
                f"{svc.base}/ask", {"id": rid, "text": "and?", "session": session, "max_tokens": 1}
            )
            return int(client.wait_for(final_for(rid))[0].json()["usage"]["prompt_tokens"])

        fresh = prompt_tokens(unique("other"))
        ask(
            port_of(svc), Transcript("remember the milk", {"conversation_id": conversation}).event()
        )
        assert prompt_tokens(conversation) > fresh
    finally:
        client.close()


def test_the_service_announced_itself_to_the_supervisor(
    svc: ServiceProcess, supervisor: tuple[SupervisorDouble, str]
) -> None:
    double = supervisor[0]
    assert double.received.wait(WAIT_S)
    method, path, headers, body = double.requests[0]
    assert (method, path) == ("POST", "/discovery")
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert body == {"service": "wyoming", "config": {"uri": f"tcp://127.0.0.1:{port_of(svc)}"}}


def test_a_wildcard_host_is_announced_as_this_machine() -> None:
    assert wyoming_uri("0.0.0.0", 10600) == f"tcp://{socket.gethostname()}:10600"
    assert wyoming_uri("assistant.local", 1) == "tcp://assistant.local:1"


def test_no_announcement_outside_the_addon_and_a_clean_stop(
    mosquitto: Broker,
    tiny_model_dir: Path,
    tmp_path: Path,
    supervisor: tuple[SupervisorDouble, str],
) -> None:
    port = free_port()
    before = len(supervisor[0].requests)
    env = {"SUPERVISOR_TOKEN": "", "EDGE_ASSISTANT_SUPERVISOR_URL": supervisor[1]}
    service = wyoming_service(tmp_path, mosquitto, tiny_model_dir, port, env)
    watcher = Client(mosquitto.host, mosquitto.port)
    try:
        with running(service, watcher):
            assert Handled.is_type(ask(port, Transcript("hi").event()).type)
            service.signal(signal.SIGTERM)
            assert service.wait() == 0
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            pass  # the Wyoming port is closed with the service
    finally:
        watcher.close()
    assert len(supervisor[0].requests) == before


def test_a_port_in_use_stops_the_start_with_a_clear_error(
    mosquitto: Broker, tiny_model_dir: Path, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        service = wyoming_service(tmp_path, mosquitto, tiny_model_dir, port)
        service.start()
        assert service.wait() == 1
    assert f"cannot listen for Wyoming on 127.0.0.1:{port}" in service.log()
