"""The core in-process over a real worker: refusals never raise, one final per request,
sessions on the core's clock, and cancelled turns are not remembered (each outcome made
deterministic by the queue, not left to a race)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from assistant.config import parse_config
from assistant.core.core import Core
from assistant.core.events import Delta, Finished
from assistant.core.request import Message, Request, Sampling
from assistant.worker.protocol import StartSpec
from assistant.worker.supervisor import Supervisor

IDLE_S = 60.0
GREEDY = Sampling(temperature=0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_core(model: Path, clock: Callable[[], float] | None = None) -> Core:
    config = parse_config(
        {"sessions": {"idle_s": IDLE_S}, "engine": {"temperature": 0, "max_tokens": 8}}
    )
    spec = StartSpec(str(model), 1, 2048, 1, 64 << 20)
    worker = Supervisor(spec)
    return Core(
        config, worker, model_id="tiny", max_batch=1, context_tokens=2048, clock=clock or Clock()
    )


@asynccontextmanager
async def running(core: Core) -> AsyncIterator[Core]:
    await core.start()
    try:
        yield core
    finally:
        await core.drain(5.0)
        await core.close()


def text(rid: str, words: str = "hello", **kw: object) -> Request:
    return Request(rid, "cli", "test", words, sampling=GREEDY, **kw)  # type: ignore[arg-type]


async def prompt_tokens(core: Core, rid: str, session: str | None) -> int:
    final = await core.submit(text(rid, "what is on?", session=session)).final()
    assert final.result is not None, final.error
    return final.result.usage.prompt_tokens


def code(final: Finished) -> str | None:
    return final.error.code if final.error is not None else None


def test_refusals_are_final_events_not_exceptions(tiny_model_dir: Path) -> None:
    async def scenario() -> None:
        core = make_core(tiny_model_dir)
        assert code(await core.submit(text("early")).final()) == "busy"  # still starting
        async with running(core):
            for request in (
                text("blank", "   "),
                Request("none", "cli", "test"),
                Request("both", "cli", "t", "x", messages=(Message("user", "y"),)),
                text("prio", priority=99),
                text("zero", max_tokens=0),
            ):
                assert code(await core.submit(request).final()) == "invalid_request", request
            ok = core.submit(text("ok"))
            twin = core.submit(text("ok"))  # the same id while the first runs
            assert code(await twin.final()) == "invalid_request"
            assert (await ok.final()).result is not None
        assert code(await core.submit(text("late")).final()) == "shutting_down"

    asyncio.run(scenario())


def test_events_are_deltas_then_one_final(tiny_model_dir: Path) -> None:
    async def scenario() -> None:
        async with running(make_core(tiny_model_dir)) as core:
            handle = core.submit(text("stream", max_tokens=8))
            seen: list[Delta | Finished] = [event async for event in handle.events()]
            *deltas, final = seen
            assert isinstance(final, Finished) and final.result is not None
            assert all(isinstance(d, Delta) for d in deltas)
            assert [d.seq for d in deltas if isinstance(d, Delta)] == list(range(len(deltas)))
            assert "".join(d.text for d in deltas if isinstance(d, Delta)) == final.result.text
            assert not handle.cancel()  # over: nothing to cancel

    asyncio.run(scenario())


def test_sessions_grow_and_expire_on_the_core_clock(tiny_model_dir: Path) -> None:
    async def scenario() -> None:
        clock = Clock()
        async with running(make_core(tiny_model_dir, clock)) as core:
            fresh = await prompt_tokens(core, "s1", "kitchen")
            assert await prompt_tokens(core, "s2", "kitchen") > fresh
            assert await prompt_tokens(core, "s3", None) == fresh  # no session: no history
            clock.now += IDLE_S  # idle for idle_s: forgotten
            assert await prompt_tokens(core, "s4", "kitchen") == fresh

    asyncio.run(scenario())


def test_a_cancelled_turn_is_not_remembered_and_a_finished_one_is(tiny_model_dir: Path) -> None:
    async def scenario() -> None:
        async with running(make_core(tiny_model_dir)) as core:
            fresh = await prompt_tokens(core, "c0", None)
            # The batch holds one request: the session's turn waits behind the blocker,
            # so the cancel certainly finds it queued.
            blocker = core.submit(text("blocker", max_tokens=2000))
            queued = core.submit(text("turn", "what is on?", session="hall"))
            assert queued.cancel()
            assert core.cancel("blocker")
            final = await queued.final()
            assert final.result is not None and final.result.finish_reason == "cancelled"
            assert (await blocker.final()).result is not None
            assert await prompt_tokens(core, "c1", "hall") == fresh  # nothing remembered
            assert await prompt_tokens(core, "c2", "hall") > fresh  # c1 was

    asyncio.run(scenario())
