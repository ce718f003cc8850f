"""Sentence chunks made for text-to-speech: no split inside a sentence at abbreviations,
initials, numbers or list markers, whatever the deltas' cuts."""

from __future__ import annotations

import random

import pytest

from assistant.mqtt.streaming import SentenceChunker, is_abbreviation


def chunks_of(deltas: list[str]) -> list[str]:
    chunker = SentenceChunker()
    out = [s for d in deltas for s in chunker.push(d)]
    if rest := chunker.flush():
        out.append(rest)
    return out


def every_cut(text: str) -> list[list[str]]:
    """The text whole, one character at a time, and cut at a few random places."""
    rng = random.Random(text)
    cuts = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, 7)))
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    return [[text], list(text), pieces]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Dr. Smith paid 3.50 dollars. He left.",
            ["Dr. Smith paid 3.50 dollars. ", "He left."],
        ),
        ("Use a lamp, e.g. the red one. Or not.", ["Use a lamp, e.g. the red one. ", "Or not."]),
        ("That is, i.e. a joke. Yes.", ["That is, i.e. a joke. ", "Yes."]),
        ("Mr. Jones and Mrs. Jones came. Fine.", ["Mr. Jones and Mrs. Jones came. ", "Fine."]),
        ("Turn left on Main St. Then stop.", ["Turn left on Main St. Then stop."]),
        ("Go to St. Louis. Now.", ["Go to St. Louis. ", "Now."]),
        ("It is No. 5 on the list. Good.", ["It is No. 5 on the list. ", "Good."]),
        ("No. I do not think so.", ["No. ", "I do not think so."]),
        ("The U.S. Army came. Then more.", ["The U.S. Army came. ", "Then more."]),
        ("J. R. R. Tolkien wrote it. Read it.", ["J. R. R. Tolkien wrote it. ", "Read it."]),
        ("Pi is 3.14159 roughly. Yes.", ["Pi is 3.14159 roughly. ", "Yes."]),
        ("I counted 3. Then 4.", ["I counted 3. ", "Then 4."]),
        ("Wait... what? Really!", ["Wait... what? ", "Really!"]),
        ("Steps:\n1. Open it.\n2. Close it.", ["Steps:\n", "1. Open it.\n", "2. Close it."]),
        ('He said "Hi." Then left.', ['He said "Hi." ', "Then left."]),
        ("Meet at 5 p.m. today. Ok.", ["Meet at 5 p.m. today. ", "Ok."]),
        ("Costs approx. ten euros. Cheap.", ["Costs approx. ten euros. ", "Cheap."]),
    ],
)
def test_sentences(text: str, expected: list[str]) -> None:
    for deltas in every_cut(text):
        assert chunks_of(deltas) == expected, deltas


def test_a_number_cut_after_its_point_is_not_a_sentence_end() -> None:
    chunker = SentenceChunker()
    assert chunker.push("It costs 3.") == []
    assert chunker.push(" ") == []  # the next character decides
    assert chunker.push("50") == ["It costs 3. "]  # "3. 50": odd, but a space was sent


def test_decimal_split_across_deltas_stays_whole() -> None:
    assert chunks_of(["Dr", ".", " Smith paid 3", ".", "50 dollars", ".", " Bye."]) == [
        "Dr. Smith paid 3.50 dollars. ",
        "Bye.",
    ]


def test_a_boundary_waits_for_the_next_character() -> None:
    chunker = SentenceChunker()
    assert chunker.push("Hello there. ") == []  # "Dr. " would look the same
    assert chunker.push("How") == ["Hello there. "]
    assert chunker.flush() == "How"


@pytest.mark.parametrize(
    ("before", "following", "expected"),
    [
        ("Ask Dr", "S", True),
        ("see (e.g", "t", True),
        ("No", "5", True),
        ("No", "I", False),
        ("I have 3", "T", False),
        ("\n1", "O", True),
        ("from the U.S", "A", True),
        ("", "A", False),
        ("the end", "T", False),
    ],
)
def test_is_abbreviation(before: str, following: str, expected: bool) -> None:
    assert is_abbreviation(before, following) is expected


def test_chunks_always_add_up_to_the_text() -> None:
    text = "Dr. A. Smith, No. 5, e.g. here. 3.5 kg!\n1. x... y? Z. End"
    for seed in range(30):
        rng = random.Random(seed)
        cuts = sorted(rng.sample(range(1, len(text)), rng.randint(1, 20)))
        deltas = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        out = chunks_of(deltas)
        assert "".join(out) == text
        assert out == chunks_of([text])
