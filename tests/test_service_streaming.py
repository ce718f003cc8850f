"""Sentence chunks for `"stream": "sentences"`: the tiny test model never ends a sentence,
so the splitting itself is checked here, directly."""

from __future__ import annotations

import random

import pytest

from assistant.mqtt.streaming import SentenceChunker

TEXT = (
    'Close the curtains at noon. Is it 3.5 degrees? "Yes!" she said. '
    "Then\nnew line… and more\u3002次の文\uff01最后"
)


def chunks_of(deltas: list[str]) -> list[str]:
    chunker = SentenceChunker()
    out = [s for d in deltas for s in chunker.push(d)]
    if rest := chunker.flush():
        out.append(rest)
    return out


def test_whole_sentences() -> None:
    out = chunks_of(["Close the curtains", " at noon. Is it 3", ".5 degrees? Fine", "."])
    assert out == ["Close the curtains at noon. ", "Is it 3.5 degrees? ", "Fine."]


@pytest.mark.parametrize("seed", range(20))
def test_any_split_adds_up_and_splits_alike(seed: int) -> None:
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(TEXT)), rng.randint(1, 30)))
    deltas = [TEXT[a:b] for a, b in zip([0, *cuts], [*cuts, len(TEXT)], strict=True)]
    out = chunks_of(deltas)
    assert "".join(out) == TEXT
    assert out == chunks_of([TEXT])  # the boundaries do not depend on the cuts
    assert all(out)


def test_no_boundary_means_one_chunk_at_the_end() -> None:
    assert chunks_of(["abc", "def"]) == ["abcdef"]
    assert chunks_of([]) == []
