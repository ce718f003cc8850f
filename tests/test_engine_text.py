"""Sampling and streaming text, on a real byte-level BPE tokenizer trained in the test."""

from __future__ import annotations

import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from assistant.engine.detokenize import TextStream
from assistant.engine.request import SamplingParams
from assistant.engine.sampling import apply_repetition_penalty, pick_token

CORPUS = ["the kitchen light is on", "turn off the hallway light", "good night"] * 20


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # A small vocabulary: characters outside the corpus split into single bytes, so an
    # emoji or a Chinese character spans several tokens.
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|im_end|>"],
    )
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def stream_all(tok: Tokenizer, text: str, stop: tuple[str, ...] = ()) -> tuple[list[str], str]:
    stream = TextStream(tok, stop)
    chunks = []
    for token_id in tok.encode(text).ids:
        chunks.append(stream.push(token_id))
        if stream.stopped:
            break
    chunks.append(stream.flush())
    return [c for c in chunks if c], stream.text


@pytest.mark.parametrize(
    "text",
    [
        "turn off the light",
        "Grüße aus der Küche 🙂👍🏽",
        "你好，厨房的灯开着。",  # noqa: RUF001 - a real Chinese comma
        "a\u202eb 🇫🇷 e\u0301",
    ],
)
def test_streamed_chunks_concatenate_to_the_text(tokenizer: Tokenizer, text: str) -> None:
    ids = tokenizer.encode(text).ids
    chunks, final = stream_all(tokenizer, text)
    assert "".join(chunks) == final == text
    assert not any("\ufffd" in c for c in chunks)
    if any(ord(ch) > 0x7FF for ch in text):
        assert len(ids) > len(chunks) > 1  # some characters really spanned several tokens


def test_stop_string_is_cut_and_never_shown(tokenizer: Tokenizer) -> None:
    chunks, final = stream_all(tokenizer, "the light is on\nUser: turn it off", ("\nUser:",))
    assert final == "the light is on"
    assert "".join(chunks) == final
    assert all("User" not in c for c in chunks)


def test_text_resembling_a_stop_prefix_is_released_at_the_end(tokenizer: Tokenizer) -> None:
    chunks, final = stream_all(tokenizer, "lights\nUs", ("\nUser:",))
    assert final == "lights\nUs"
    assert "".join(chunks) == final


def test_special_tokens_add_no_text(tokenizer: Tokenizer) -> None:
    stream = TextStream(tokenizer)
    end = tokenizer.token_to_id("<|im_end|>")
    assert end is not None
    out = [stream.push(i) for i in [*tokenizer.encode("good night").ids, end]]
    assert "".join(out) + stream.flush() == "good night"


def test_greedy_is_argmax_and_deterministic() -> None:
    logits = np.array([0.1, 3.0, 2.9, -1.0], dtype=np.float32)
    rng = np.random.default_rng(0)
    assert all(pick_token(logits.copy(), SamplingParams(), rng) == 1 for _ in range(5))


def test_top_k_one_equals_greedy_at_any_temperature() -> None:
    rng = np.random.default_rng(1)
    logits = np.random.default_rng(2).normal(size=500).astype(np.float32)
    params = SamplingParams(temperature=1.5, top_k=1)
    assert pick_token(logits.copy(), params, rng) == int(np.argmax(logits))


def test_top_p_keeps_only_the_nucleus() -> None:
    logits = np.log(np.array([0.6, 0.3, 0.05, 0.05], dtype=np.float32))
    rng = np.random.default_rng(3)
    params = SamplingParams(temperature=1.0, top_p=0.8)
    picks = {pick_token(logits.copy(), params, rng) for _ in range(300)}
    assert picks == {0, 1}


def test_temperature_sampling_follows_the_distribution() -> None:
    logits = np.log(np.array([0.7, 0.2, 0.1], dtype=np.float32))
    rng = np.random.default_rng(4)
    counts = np.bincount(
        [pick_token(logits.copy(), SamplingParams(temperature=1.0), rng) for _ in range(3000)],
        minlength=3,
    )
    assert np.allclose(counts / 3000, [0.7, 0.2, 0.1], atol=0.04)


def test_same_seed_same_samples() -> None:
    logits = np.random.default_rng(5).normal(size=100).astype(np.float32)
    params = SamplingParams(temperature=1.0, seed=42)
    runs = [
        [pick_token(logits.copy(), params, np.random.default_rng(42)) for _ in range(3)]
        for _ in range(2)
    ]
    assert runs[0] == runs[1]


def test_repetition_penalty_demotes_seen_tokens() -> None:
    logits = np.array([2.0, 1.9, -1.0, -1.1], dtype=np.float32)
    apply_repetition_penalty(logits, np.array([0, 2, 0]), 1.5)
    assert logits.tolist() == pytest.approx([2.0 / 1.5, 1.9, -1.5, -1.1])
    assert pick_token(logits, SamplingParams(), np.random.default_rng()) == 1
