"""Turning generated ids into text as they arrive, without ever emitting half a character
or any part of a stop string."""

from __future__ import annotations

from collections.abc import Sequence

from tokenizers import Tokenizer

REPLACEMENT = "\ufffd"


class TextStream:
    """Incremental detokenizer with stop strings.

    Decodes a sliding window of ids (HF's prefix/read offsets) so each token costs O(1):
    byte-level tokens of one multi-byte character decode to U+FFFD until the last byte
    arrives, so text ending in U+FFFD is held back. Text that could be the start of a
    stop string is held back too, until it is known not to be one.
    """

    def __init__(self, tokenizer: Tokenizer, stop: Sequence[str] = ()) -> None:
        self._tok = tokenizer
        self._ids: list[int] = []
        self._prefix = 0  # window start: context so decoding joins words correctly
        self._read = 0  # ids before this are already turned into text
        self._stop = tuple(s for s in stop if s)
        self._text = ""  # all text decoded so far (including held back text)
        self._emitted = 0  # characters of _text already handed out
        self.stopped = False

    @property
    def text(self) -> str:
        """The text handed out so far."""
        return self._text[: self._emitted]

    def push(self, token_id: int) -> str:
        """Add one id; return the new text that is safe to show (may be empty)."""
        if self.stopped:
            return ""
        self._ids.append(token_id)
        before = self._tok.decode(self._ids[self._prefix : self._read], skip_special_tokens=True)
        after = self._tok.decode(self._ids[self._prefix :], skip_special_tokens=True)
        if after.endswith(REPLACEMENT) or len(after) <= len(before):
            return self._release()  # incomplete character (or a special token)
        self._text += after[len(before) :]
        self._prefix, self._read = self._read, len(self._ids)
        return self._release()

    def _release(self) -> str:
        for stop in self._stop:
            at = self._text.find(stop)
            if at != -1:
                self._text = self._text[:at]
                self.stopped = True
        end = len(self._text)
        if not self.stopped:
            end -= self._partial_stop_len()
        end = max(end, self._emitted)
        out = self._text[self._emitted : end]
        self._emitted = end
        return out

    def _partial_stop_len(self) -> int:
        """Length of the longest tail of the text that begins some stop string."""
        longest = 0
        for stop in self._stop:
            for n in range(min(len(stop) - 1, len(self._text)), longest, -1):
                if self._text.endswith(stop[:n]):
                    longest = n
                    break
        return longest

    def flush(self) -> str:
        """At the end of generation: release what was held back for a possible stop string."""
        if self.stopped:
            return ""
        end = len(self._text)
        out = self._text[self._emitted : end]
        self._emitted = end
        return out
