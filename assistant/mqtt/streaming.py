"""Partial text for `{reply topic}/stream`: token deltas, or whole sentences for TTS."""

from __future__ import annotations

import re

# The end of a sentence: terminal punctuation (with closing quotes/brackets) followed by
# whitespace, or a line break. CJK full stops need no space after them.
_BOUNDARY = re.compile(
    r"(?:[.!?\u2026]+[\"'\u201d\u2019)\]]*\s+"  # . ! ? … and closing quotes, then a space
    r"|[\u3002\uff01\uff1f]+[\u201d\u2019\u300d\uff09]*\s*"  # CJK . ! ?: no space needed
    r"|\n+)"
)


class SentenceChunker:
    """Collects deltas and hands out complete sentences; the concatenation of everything
    it hands out (plus `flush()`) equals the concatenation of what it was given."""

    def __init__(self) -> None:
        self._buffer = ""

    def push(self, text: str) -> list[str]:
        self._buffer += text
        out: list[str] = []
        start = 0
        for match in _BOUNDARY.finditer(self._buffer):
            if match.end() == len(self._buffer) and not match.group().endswith(("\n", " ")):
                break  # "3." at the very end may continue as "3.5"
            out.append(self._buffer[start : match.end()])
            start = match.end()
        self._buffer = self._buffer[start:]
        return [s for s in out if s]

    def flush(self) -> str:
        rest, self._buffer = self._buffer, ""
        return rest
