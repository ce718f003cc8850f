"""Partial text for `{reply topic}/stream`: token deltas, or whole sentences for TTS.

A text-to-speech engine reads each chunk as one utterance, so a split in the middle of a
sentence ("Dr." | "Smith paid 3." | "50 dollars.") is heard as a pause and a wrong
intonation. A boundary is therefore only taken once the character after it is known, and
not after abbreviations, initials, list numbers, or before a lowercase continuation.
"""

from __future__ import annotations

import re

# A candidate end of a sentence: terminal punctuation (with closing quotes/brackets)
# followed by whitespace, or a line break. CJK full stops need no space after them.
_BOUNDARY = re.compile(
    r"(?:(?P<stop>[.!?\u2026]+)[\"'\u201d\u2019)\]]*\s+"  # . ! ? … and closing quotes, space
    r"|[\u3002\uff01\uff1f]+[\u201d\u2019\u300d\uff09]*\s*"  # CJK . ! ?: no space needed
    r"|\n+)"
)
# Words that end with a period without ending the sentence ("Dr. Smith", "Main St. 5").
# "etc." is left out on purpose: it ends sentences more often than not.
ABBREVIATIONS = frozenset(
    {
        *("mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "ave", "rd", "blvd", "vs"),
        *("approx", "dept", "est", "fig", "gen", "gov", "col", "capt", "lt", "sgt", "rev"),
        *("hon", "inc", "ltd", "co", "corp", "jan", "feb", "mar", "apr", "jun", "jul", "aug"),
        *("sep", "sept", "oct", "nov", "dec"),
    }
)
# Abbreviations only when a number follows: "No. 5", but "No. I don't think so."
BEFORE_NUMBER = frozenset({"no", "nr", "vol", "p", "pp", "ch", "art", "sec", "ex"})
_OPENERS = "\"'(\u201c\u2018["


class SentenceChunker:
    """Collects deltas and hands out complete sentences; the concatenation of everything
    it hands out (plus `flush()`) equals the concatenation of what it was given, and the
    boundaries do not depend on how the text was cut into deltas."""

    def __init__(self) -> None:
        self._buffer = ""

    def push(self, text: str) -> list[str]:
        self._buffer += text
        out: list[str] = []
        start = 0
        for match in _BOUNDARY.finditer(self._buffer):
            if match.end() == len(self._buffer):
                break  # more whitespace or the next word may follow: decide on the next delta
            if not self._ends_sentence(match, start):
                continue
            out.append(self._buffer[start : match.end()])
            start = match.end()
        self._buffer = self._buffer[start:]
        return out

    def flush(self) -> str:
        rest, self._buffer = self._buffer, ""
        return rest

    def _ends_sentence(self, match: re.Match[str], start: int) -> bool:
        stop = match.group("stop")
        if stop is None or stop in "!?":
            return True  # a line break, a CJK stop, "!" or "?": always an end
        following = self._buffer[match.end()]
        if following.islower():
            return False  # "e.g. the", "approx. two", "… and then"
        if stop != ".":
            return True
        return not is_abbreviation(self._buffer[start : match.start()], following)


def is_abbreviation(before: str, following: str) -> bool:
    """Whether a period after `before` (the sentence so far) belongs to a word rather than
    ending the sentence; `following` is the first character after the whitespace."""
    word = before.rsplit(None, 1)[-1] if before.strip() else ""
    word = word.lstrip(_OPENERS)
    if not word:
        return False
    lower = word.lower()
    if "." in word:
        return True  # "e.g", "i.e", "U.S", "a.m": the period inside shows it
    if len(word) == 1 and word.isalpha():
        return True  # an initial: "J. Smith"
    if lower in ABBREVIATIONS:
        return True
    if lower in BEFORE_NUMBER and following.isdigit():
        return True
    # "1. Open the window": a list number at the start of a line is no sentence of its own.
    line = before.rsplit("\n", 1)[-1]
    return word.isdigit() and line.strip() == word
