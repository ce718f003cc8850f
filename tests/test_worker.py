"""The sandboxed worker as a real process: what it exposes, and surviving its deaths."""

from __future__ import annotations

import asyncio
import json
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from assistant.core.events import Delta, Finished
from assistant.core.flight import Flight
from assistant.engine.request import GenerationRequest
from assistant.sandbox import reachable
from assistant.sandbox.report import NOBODY
from assistant.worker.protocol import StartSpec
from assistant.worker.supervisor import Supervisor
from tests.fanotify_gate import FanotifyGate, Open

SECRET = "s3cret-token-that-must-not-leak"
HANG_GUARD_S = 60  # only keeps a failing test from hanging


def spec(model: Path, **kw: object) -> StartSpec:
    base: dict[str, object] = {
        "model_path": str(model),
        "threads": 1,
        "context_tokens": 512,
        "max_batch": 4,
        "kv_budget_bytes": 64 << 20,
    }
    base.update(kw)
    return StartSpec(**base)  # type: ignore[arg-type]


def req(i: int | str, text: str = "hello", max_tokens: int = 8) -> GenerationRequest:
    return GenerationRequest(f"r{i}", (("user", f"{text} {i}"),), max_tokens)


def submit(sup: Supervisor, request: GenerationRequest) -> Flight:
    """A flight straight to the worker client (no scheduler in these tests)."""
    flight = Flight(request.id, request)
    sup.send(flight)
    return flight


async def finish(handle_stream: object) -> Finished:
    last = None
    async for event in handle_stream:  # type: ignore[attr-defined]
        last = event
    assert isinstance(last, Finished)
    return last


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def test_worker_from_outside(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPERVISOR_TOKEN", SECRET)
    monkeypatch.setenv("EDGE_ASSISTANT_MQTT_PASSWORD", SECRET)

    async def scenario() -> None:
        sup = Supervisor(spec(tiny_model_dir))
        hello = await sup.start()
        try:
            assert sup.pid == hello.pid
            layers = hello.sandbox["layers"]
            print("sandbox layers on this machine:", json.dumps(layers))
            status = proc_status(hello.pid)
            if layers["no_new_privs"] == "active":
                assert status["NoNewPrivs"] == "1"
            if layers["seccomp"] == "active":
                assert status["Seccomp"] == "2"
            if os.geteuid() == 0:
                assert layers["uid"] == "active"
                assert status["Uid"].split()[0] != "0"
            environ = Path(f"/proc/{hello.pid}/environ").read_bytes()
            assert SECRET.encode() not in environ
            assert b"SUPERVISOR_TOKEN" not in environ
            fds = [str(p.readlink()) for p in Path(f"/proc/{hello.pid}/fd").iterdir()]
            assert sum(link.startswith("socket:") for link in fds) == 1
            # And it still answers after all that.
            done = await finish(submit(sup, req(1)).events())
            assert done.result is not None and done.result.usage.completion_tokens > 0
        finally:
            await sup.stop()

    asyncio.run(scenario())


async def consume(flight: Flight, finals: Counter[str], outcomes: Counter[str]) -> None:
    """Read one flight to its end, counting its finals and checking its deltas add up."""
    text = ""
    async for event in flight.events():
        if isinstance(event, Delta):
            text += event.text
            continue
        finals[event.id] += 1
        if event.result is not None:
            assert event.result.text == text  # deltas add up after retries too
            outcomes[event.result.finish_reason] += 1
        else:
            assert event.error is not None
            outcomes[event.error.code] += 1


class Chaos:
    """SIGKILLs the worker at random moments, sometimes again while the next one starts."""

    def __init__(self, sup: Supervisor, kills: int) -> None:
        self.sup = sup
        self.wanted = kills
        self.kills = 0
        self.startup_kills = 0
        self.rng = random.Random(1234)

    def _kill(self) -> None:
        assert self.sup.pid is not None
        if not self.sup.worker_ready:
            self.startup_kills += 1
        os.kill(self.sup.pid, signal.SIGKILL)
        self.kills += 1

    async def run(self) -> None:
        while self.kills < self.wanted:
            await asyncio.sleep(self.rng.uniform(0.01, 0.15))
            if self.sup.pid is None:
                continue
            self._kill()
            if self.rng.random() < 0.3:  # sometimes kill the next one while it starts up
                await self._kill_while_starting()

    async def _kill_while_starting(self) -> None:
        for _ in range(100):
            await asyncio.sleep(0.005)
            if self.sup.pid is not None and not self.sup.worker_ready:
                self._kill()
                return


def _gated_start(model: Path, **kw: object) -> tuple[list[Open], dict[str, object]]:
    """Start a worker on `model` behind a fanotify gate; its model-file opens, and hello's
    sandbox section."""

    async def scenario() -> tuple[int, dict[str, object]]:
        sup = Supervisor(spec(model, **kw))
        hello = await sup.start()
        try:
            done = await finish(submit(sup, req(1)).events())
            assert done.result is not None
        finally:
            await sup.stop()
        return hello.pid, hello.sandbox

    if os.geteuid() != 0:
        pytest.skip("fanotify permission events need CAP_SYS_ADMIN (run as root)")
    with FanotifyGate(model) as gate:
        pid, sandbox = asyncio.run(scenario())
    return [o for o in gate.opens if o.pid == pid], sandbox


@pytest.fixture
def private_model(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """The tiny model inside a root-only (0700) directory, like /root/.cache here."""
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    model = private / "model"
    shutil.copytree(tiny_model_dir, model)
    assert not reachable(model, NOBODY, NOBODY)
    return model


def test_model_files_are_first_opened_fully_confined(private_model: Path) -> None:
    opens, sandbox = _gated_start(private_model)
    python_closed = not reachable(Path(sys.base_prefix) / "lib", NOBODY, NOBODY)
    print("python closed to nobody:", python_closed, "order:", sandbox["order"])
    names = {o.name for o in opens}
    assert {"manifest.json", "tokenizer.json", "model.onnx", "model.onnx.data"} <= names
    first = opens[0].status  # read while the worker was blocked in its first open
    assert first["NoNewPrivs"] == "1"
    assert first["Seccomp"] == "2"
    assert all(uid != "0" for uid in first["Uid"].split())
    assert sandbox["at_model_parse"] == {
        "uid": int(first["Uid"].split()[0]),
        "no_new_privs": 1,
        "seccomp": 2,
    }
    assert all(o.status == {**o.status, "Seccomp": "2", "NoNewPrivs": "1"} for o in opens)


def test_the_gate_sees_an_unconfined_worker_open_its_model(private_model: Path) -> None:
    """The control for the test above: without the sandbox the same gate sees root, no
    NO_NEW_PRIVS and no seccomp at the first open."""
    opens, sandbox = _gated_start(private_model, sandbox=False)
    assert sandbox == {"enabled": False}
    first = opens[0].status
    assert (first["NoNewPrivs"], first["Seccomp"], first["Uid"].split()[0]) == ("0", "0", "0")


def test_chaos_every_request_gets_exactly_one_final(tiny_model_dir: Path) -> None:
    async def scenario() -> tuple[Counter[str], int, int]:
        sup = Supervisor(spec(tiny_model_dir), backoff_s=(0.01, 0.2))
        await sup.start()
        finals: Counter[str] = Counter()
        outcomes: Counter[str] = Counter()
        chaos = Chaos(sup, kills=20)
        killer = asyncio.create_task(chaos.run())
        consumers = []
        for i in range(300):
            flight = submit(sup, req(i, max_tokens=random.randint(1, 12)))
            consumers.append(asyncio.create_task(consume(flight, finals, outcomes)))
            await asyncio.sleep(0.01)
        await asyncio.gather(*consumers)
        await killer
        await sup.stop()
        print("outcomes:", dict(outcomes), "kills:", chaos.kills, "start-up:", chaos.startup_kills)
        return finals, chaos.kills, sup.deaths

    finals, kills, deaths = asyncio.run(scenario())
    assert len(finals) == 300
    assert set(finals.values()) == {1}
    assert kills >= 15
    assert deaths >= 15


def test_stuck_worker_is_killed_and_the_next_request_succeeds(tiny_model_dir: Path) -> None:
    async def scenario() -> None:
        sup = Supervisor(spec(tiny_model_dir, debug_hang_text="hang 0"), stall_timeout_s=1.5)
        await sup.start()
        try:
            stuck = await finish(submit(sup, req(0, "hang")).events())
            assert stuck.error is not None and stuck.error.code == "engine_failure"
            assert sup.deaths == 2  # killed at its deadline, retried once, killed again
            after = await finish(submit(sup, req(1)).events())
            assert after.result is not None
        finally:
            await sup.stop()

    asyncio.run(scenario())


@pytest.mark.slow
def test_cancel_running_request_within_a_token(real_model_dir: Path) -> None:
    async def scenario() -> None:
        sup = Supervisor(spec(real_model_dir, threads=2, context_tokens=2048))
        await sup.start()
        try:
            handle = submit(sup, req(0, max_tokens=2000))
            text = ""
            async for event in handle.events():
                if isinstance(event, Delta):
                    text += event.text
                    if len(text) > 5:
                        handle.cancel_requested = True  # what the scheduler's cancel does
                        sup.stop_generating(handle)
                else:
                    assert event.result is not None
                    assert event.result.finish_reason == "cancelled"
                    assert event.result.text == text
                    # Cancelled after a few tokens of 2,000: the worker stopped at once.
                    assert event.result.usage.completion_tokens < 40
        finally:
            await sup.stop()

    asyncio.run(scenario())


def test_unsandboxed_worker_still_works(tiny_model_dir: Path) -> None:
    async def scenario() -> None:
        sup = Supervisor(spec(tiny_model_dir, sandbox=False))
        hello = await sup.start()
        try:
            assert hello.sandbox == {"enabled": False}
            assert proc_status(hello.pid)["Seccomp"] == "0"
            assert (await finish(submit(sup, req(0)).events())).result is not None
        finally:
            await sup.stop()

    asyncio.run(scenario())


def test_parent_sigkill_leaves_no_worker(tiny_model_dir: Path) -> None:
    program = textwrap.dedent(f"""
        import asyncio
        from assistant.worker.protocol import StartSpec
        from assistant.worker.supervisor import Supervisor

        async def main():
            sup = Supervisor(StartSpec(model_path={str(tiny_model_dir)!r}, threads=1,
                             context_tokens=256, max_batch=1, kv_budget_bytes=1 << 20))
            hello = await sup.start()
            print(hello.pid, flush=True)
            await asyncio.sleep(60)

        asyncio.run(main())
    """)
    with subprocess.Popen(
        [sys.executable, "-c", program], stdout=subprocess.PIPE, text=True
    ) as parent:
        _kill_parent_and_check(parent)


def _kill_parent_and_check(parent: subprocess.Popen[str]) -> None:
    try:
        assert parent.stdout is not None
        worker = int(parent.stdout.readline())
        exited = os.pidfd_open(worker)  # readable once the worker exits
        try:
            parent.send_signal(signal.SIGKILL)
            parent.wait(5)
            # The worker dies with its parent (PDEATHSIG, or EOF on its channel); the
            # timeout only keeps a failing run from hanging, it is not a bound on speed.
            assert select.select([exited], [], [], HANG_GUARD_S)[0], "the worker outlived it"
        finally:
            os.close(exited)
    finally:
        parent.kill()
        parent.wait()


@pytest.fixture
def mapped_real_model(real_model_dir: Path) -> Iterator[Path]:
    """The real model where the sandboxed uid can reach it, so the worker maps its
    external data from the file: loading then peaks at about the loaded size. (Under a
    closed directory, as in ~/.cache here, the worker copies it from memory and peaks
    ~150 MB above, which a limit of loaded size + 40 MB cannot hold.)"""
    folder = Path(tempfile.mkdtemp(dir="/var/tmp"))
    try:
        folder.chmod(0o755)
        model = folder / real_model_dir.name
        model.mkdir()
        for file in real_model_dir.iterdir():
            os.link(file, model / file.name)
        assert reachable(model, NOBODY, NOBODY)
        yield model
    finally:
        shutil.rmtree(folder)


@pytest.mark.slow
def test_allocation_beyond_the_limit_fails_the_request_and_recovers(
    mapped_real_model: Path,
) -> None:
    real_model_dir = mapped_real_model

    async def loaded_vmsize() -> int:
        sup = Supervisor(spec(real_model_dir, threads=2, context_tokens=2048))
        hello = await sup.start()
        if os.geteuid() == 0:
            assert hello.sandbox["external_data"] == "mapped from the file"
        size = int(proc_status(hello.pid)["VmSize"].split()[0]) * 1024
        await sup.stop()
        return size

    async def scenario(limit: int) -> None:
        sup = Supervisor(spec(real_model_dir, threads=2, context_tokens=2048, memory_bytes=limit))
        hello = await sup.start()
        try:
            assert hello.sandbox["layers"]["rlimit_as"] == "active"
            # ~1,900 prompt tokens: its KV cache (~90 MB) and attention scores (~130 MB)
            # cannot fit in the 40 MB left; a short prompt's (~12 MB) can.
            big = await finish(submit(sup, req(0, "the kitchen light is on " * 380, 4)).events())
            assert big.error is not None and big.error.code == "engine_failure"
            assert "memory" in big.error.message
            small = await finish(submit(sup, req(1, "hello", 4)).events())
            assert small.result is not None and small.result.usage.completion_tokens > 0
            assert sup.deaths >= 1  # the worker was recycled
        finally:
            await sup.stop()

    limit = asyncio.run(loaded_vmsize()) + (40 << 20)
    asyncio.run(scenario(limit))
