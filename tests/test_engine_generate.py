"""Generation on a real (tiny, random) ONNX model: the cache, batching, stops and limits."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from assistant.core.events import Delta, Event, Finished, GenerationResult
from assistant.engine.batch import Batch, generate
from assistant.engine.decoder import Decoder
from assistant.engine.engine import Engine
from assistant.engine.kvcache import KVCache
from assistant.engine.request import GenerationRequest, SamplingParams
from assistant.errors import RequestError
from assistant.model.manager import ModelManager

PROMPTS = ["hi", "the light is on in the kitchen", "turn the hall light off, please", "a"]


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> Engine:
    model = ModelManager(tiny_model_dir.parent).load_model(tiny_model_dir, threads=1)
    return Engine.from_model(model, context_tokens=512)


def request(text: str, max_tokens: int = 24, rid: str = "r", **kw: object) -> GenerationRequest:
    return GenerationRequest(rid, (("user", text),), max_tokens, **kw)  # type: ignore[arg-type]


def run(engine: Engine, req: GenerationRequest) -> tuple[list[Delta], GenerationResult]:
    deltas: list[Delta] = []
    final: list[GenerationResult] = []
    for event in generate(engine, req):
        if isinstance(event, Delta):
            deltas.append(event)
        else:
            assert event.result is not None
            final.append(event.result)
    assert len(final) == 1
    return deltas, final[0]


def greedy_without_cache(engine: Engine, prompt: list[int], n: int) -> list[int]:
    """Reference: recompute the whole sequence every step (no KV cache at all)."""
    ids = list(prompt)
    for _ in range(n):
        logits, _ = engine.decoder.prefill(ids)
        token = int(np.argmax(logits))
        ids.append(token)
        if token in engine.stop_ids:
            break
    return ids[len(prompt) :]


def test_cached_greedy_matches_full_recompute(engine: Engine) -> None:
    req = request(PROMPTS[1], max_tokens=20)
    prompt = engine.prompt_ids(req.messages)
    _, result = run(engine, req)
    expected = greedy_without_cache(engine, prompt, 20)
    assert result.usage.completion_tokens == len(expected)
    assert result.text == engine.tokenizer.decode(expected, skip_special_tokens=True)


def test_greedy_is_deterministic(engine: Engine) -> None:
    assert run(engine, request(PROMPTS[2]))[1].text == run(engine, request(PROMPTS[2]))[1].text


def test_streamed_deltas_concatenate_to_the_text(engine: Engine) -> None:
    deltas, result = run(engine, request(PROMPTS[1], max_tokens=40))
    assert [d.seq for d in deltas] == list(range(len(deltas)))
    assert "".join(d.text for d in deltas) == result.text
    assert result.usage.prompt_tokens == len(engine.prompt_ids(request(PROMPTS[1]).messages))


def test_batch_rows_equal_rows_alone_when_joining_and_leaving(engine: Engine) -> None:
    alone = {
        f"r{i}": run(engine, request(p, 12 + 4 * i, f"r{i}"))[1] for i, p in enumerate(PROMPTS)
    }
    batch = Batch(engine, max_batch=4)
    results: dict[str, GenerationResult] = {}
    texts: dict[str, str] = {}

    def collect(events: list[Event]) -> None:
        for event in events:
            if isinstance(event, Delta):
                texts[event.id] = texts.get(event.id, "") + event.text
            elif event.result is not None:
                results[event.id] = event.result

    # Requests join at different steps and, having different limits, leave at different steps.
    for i, prompt in enumerate(PROMPTS):
        batch.add(request(prompt, 12 + 4 * i, f"r{i}"))
        for _ in range(3):
            collect(batch.step())
    peak = batch.active
    while batch.busy:
        collect(batch.step())
    assert peak >= 2
    for rid, result in alone.items():
        assert results[rid].text == result.text
        assert texts.get(rid, "") == result.text
        assert results[rid].usage == result.usage


def test_max_tokens_gives_finish_reason_length(engine: Engine) -> None:
    no_eos = Engine(engine.decoder, engine.tokenizer, engine.chat, frozenset(), 512, "t")
    _, result = run(no_eos, request(PROMPTS[0], max_tokens=5))
    assert (result.usage.completion_tokens, result.finish_reason) == (5, "length")


def test_stop_string_ends_the_reply(engine: Engine) -> None:
    _, full = run(engine, request(PROMPTS[1], max_tokens=40))
    assert len(full.text) > 6
    stop = full.text[3:6]
    cut = full.text[: full.text.index(stop)]
    deltas, result = run(engine, request(PROMPTS[1], max_tokens=40, stop=(stop,)))
    assert result.text == cut
    assert result.finish_reason == "stop"
    assert "".join(d.text for d in deltas) == cut


def test_prompt_too_long_is_refused_before_running(engine: Engine) -> None:
    small = Engine(engine.decoder, engine.tokenizer, engine.chat, engine.stop_ids, 16, "tiny")
    with pytest.raises(RequestError) as err:
        Batch(small, 1).add(request("the light is on in the kitchen " * 4))
    assert err.value.code == "prompt_too_long"
    assert "window is 16" in err.value.message


def test_reply_is_capped_by_the_context_window(engine: Engine) -> None:
    req = request(PROMPTS[0], max_tokens=400)
    n_prompt = len(engine.prompt_ids(req.messages))
    small = Engine(engine.decoder, engine.tokenizer, engine.chat, frozenset(), n_prompt + 3, "t")
    _, result = run(small, req)
    assert (result.usage.completion_tokens, result.finish_reason) == (3, "length")


def test_cancel_running_and_queued(engine: Engine) -> None:
    batch = Batch(engine, max_batch=1)
    batch.add(request(PROMPTS[1], 100, "running"))
    batch.add(request(PROMPTS[2], 100, "queued"))
    events = batch.step() + batch.step()
    assert batch.cancel("running") and batch.cancel("queued")
    assert not batch.cancel("unknown")
    while batch.busy:
        events += batch.step()
    finished = {e.id: e.result for e in events if isinstance(e, Finished) and e.result}
    assert finished["running"].finish_reason == "cancelled"
    assert finished["queued"].finish_reason == "cancelled"
    assert finished["queued"].usage.completion_tokens == 0
    assert finished["running"].text == "".join(
        e.text for e in events if isinstance(e, Delta) and e.id == "running"
    )


def test_sampling_with_a_seed_is_reproducible(engine: Engine) -> None:
    params = SamplingParams(temperature=1.0, top_p=0.9, seed=7)
    first = run(engine, request(PROMPTS[2], sampling=params))[1].text
    assert first == run(engine, request(PROMPTS[2], sampling=params))[1].text


def test_decoder_reads_shapes_from_the_graph(engine: Engine) -> None:
    decoder: Decoder = engine.decoder
    assert (decoder.n_layers, decoder.n_kv_heads, decoder.head_dim) == (2, 2, 16)
    assert decoder.kv_bytes_per_token() == 2 * 2 * 2 * 16 * 4


def test_our_graphs_update_the_cache_in_place(engine: Engine) -> None:
    assert engine.decoder.inplace
    assert engine.decoder.keeps_last


def test_logits_of_a_step_outlive_the_next_run(engine: Engine) -> None:
    # In place, each run's logits are written into an array bound for that run: one
    # reused buffer would overwrite what the caller still holds.
    decoder = Decoder(engine.decoder.session, inplace=True)
    first, cache = decoder.prefill([3, 4, 5])
    kept = first.copy()
    second, cache = decoder.step(cache, np.array([int(np.argmax(first))], dtype=np.int64))
    third, _ = decoder.step(cache, np.array([int(np.argmax(second[0]))], dtype=np.int64))
    np.testing.assert_array_equal(first, kept)
    assert first.shape == second[0].shape == (decoder.vocab,)
    assert not np.array_equal(second, third)


@pytest.mark.parametrize("inplace", [True, False])
def test_both_cache_modes_give_the_same_text(engine: Engine, inplace: bool) -> None:
    decoder = Decoder(engine.decoder.session, inplace=inplace)
    other = Engine(decoder, engine.tokenizer, engine.chat, engine.stop_ids, 512, "t")
    for i, prompt in enumerate(PROMPTS):
        assert run(other, request(prompt, 20, f"m{i}"))[1].text == (
            run(engine, request(prompt, 20, f"m{i}"))[1].text
        )


def test_chunked_prefill_while_others_decode(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A newcomer's prompt is prefilled a few tokens per step while row 0 keeps decoding.
    monkeypatch.setattr("assistant.engine.batch.PREFILL_CHUNK", 3)
    long_prompt = "turn the hall light off, please, and the kitchen light too"
    alone = run(engine, request(long_prompt, 16, "late"))[1].text
    # A fresh engine: the one above kept this very prompt, which would need no chunks.
    fresh = Engine(engine.decoder, engine.tokenizer, engine.chat, engine.stop_ids, 512, "t")
    batch = Batch(fresh, max_batch=2)
    batch.add(request(PROMPTS[1], 40, "early"))
    batch.step()
    batch.add(request(long_prompt, 16, "late"))
    steps_while_pending = 0
    results: dict[str, str] = {}
    while batch.busy:
        if batch.pending:
            steps_while_pending += 1
        for event in batch.step():
            if isinstance(event, Finished) and event.result is not None:
                results[event.id] = event.result.text
    assert steps_while_pending > 3  # the prompt really went in several chunks
    assert results["late"] == alone


def test_history_is_trimmed_from_the_oldest_turn(engine: Engine) -> None:
    system = ("system", "Be brief.")
    turns = []
    for i in range(12):
        turns += [("user", f"turn {i}: the kitchen light is on"), ("assistant", f"reply {i} ok")]
    messages = (system, *turns, ("user", "and now?"))
    small = Engine(engine.decoder, engine.tokenizer, engine.chat, engine.stop_ids, 200, "t")
    ids = small.fit_prompt(messages, max_tokens=16)
    text = engine.tokenizer.decode(ids, skip_special_tokens=False)
    assert len(ids) <= 200 - 16
    assert "Be brief." in text and "and now?" in text  # system and the new message stay
    assert "turn 11" in text and "turn 0:" not in text  # newest history kept, oldest gone
    kept_users = text.count("turn ")
    assert 0 < kept_users < 12
    # Whole turns: every kept user message still has its answer after it.
    assert text.count("reply ") == kept_users


def test_shared_prompt_prefix_is_reused_and_changes_nothing(engine: Engine) -> None:
    system = ("system", "You are a helpful home assistant for a house with many lights.")
    requests = [
        GenerationRequest(f"p{i}", (system, ("user", text)), 20) for i, text in enumerate(PROMPTS)
    ]
    fresh = Engine(engine.decoder, engine.tokenizer, engine.chat, engine.stop_ids, 512, "t")
    expected = []
    for req in requests:  # a fresh engine per request: no prefix to reuse
        alone = Engine(engine.decoder, engine.tokenizer, engine.chat, engine.stop_ids, 512, "t")
        expected.append(run(alone, req)[1].text)
    reused = []
    for req in requests:
        prompt = fresh.prompt_ids(req.messages)
        hit = fresh.reuse_prefix(prompt)
        if req is not requests[0]:
            assert hit is not None and hit[0] >= 16  # the system turn came from the cache
        reused.append(run(fresh, req)[1].text)
    assert reused == expected


def test_kept_prefixes_survive_other_prompts(engine: Engine) -> None:
    # Two sources' prompts in turn: each one's cache is still there when it comes back.
    fresh = Engine(engine.decoder, engine.tokenizer, engine.chat, engine.stop_ids, 512, "t")
    first, second = request(PROMPTS[1], 8, "a"), request(PROMPTS[2], 8, "b")
    expected = run(fresh, first)[1].text
    run(fresh, second)
    prompt = fresh.prompt_ids(first.messages)
    hit = fresh.reuse_prefix(prompt)
    assert hit is not None and hit[0] == len(prompt) - 1
    assert run(fresh, first)[1].text == expected


def test_urgent_prompt_is_prefilled_before_waiting_ordinary_ones(engine: Engine) -> None:
    fresh = Engine(engine.decoder, engine.tokenizer, engine.chat, engine.stop_ids, 512, "t")
    batch = Batch(fresh, max_batch=4)
    batch.add(request(PROMPTS[0], 30, "running"))
    batch.step()
    batch.add(request(PROMPTS[1], 4, "ordinary"))
    batch.add(request(PROMPTS[2], 4, "urgent", priority=5))
    results: dict[str, GenerationResult] = {}
    while batch.busy:
        for event in batch.step():
            if isinstance(event, Finished) and event.result is not None:
                results[event.id] = event.result
    # Added after the ordinary one, its first token still came a step earlier.
    assert results["urgent"].timing.first_token_ms < results["ordinary"].timing.first_token_ms


def test_urgent_arrival_stops_the_run_in_progress_which_is_redone(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fresh() -> Engine:
        return Engine(engine.decoder, engine.tokenizer, engine.chat, engine.stop_ids, 512, "t")

    expected = run(fresh(), request(PROMPTS[1], 12, "a"))[1]
    mine = fresh()
    batch = Batch(mine, max_batch=2)
    batch.add(request(PROMPTS[1], 12, "a"))
    real_step = engine.decoder.step
    stopped: list[bool] = []
    calls = 0

    def step_as_urgent_arrives(cache: KVCache, tokens: np.ndarray) -> tuple[np.ndarray, KVCache]:
        nonlocal calls
        calls += 1
        if not stopped:  # once, as a decode run starts: the worker's reader thread's call
            reader = threading.Thread(target=lambda: stopped.append(batch.preempt(5)))
            reader.start()
            reader.join()
        return real_step(cache, tokens)

    monkeypatch.setattr(mine.decoder, "step", step_as_urgent_arrives)
    results: list[GenerationResult] = []
    while batch.busy:
        for event in batch.step():
            if isinstance(event, Finished) and event.result is not None:
                results.append(event.result)
        batch.preemption.taken()  # as the worker's loop does after taking its frames
    assert stopped == [True] and batch.preemption.count == 1
    # Every token after the first (from the prefill) is a decode run, plus the stopped one.
    assert calls == expected.usage.completion_tokens
    assert [r.text for r in results] == [expected.text]
    assert results[0].usage == expected.usage
