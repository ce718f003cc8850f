"""Grammar-constrained decoding with llguidance: per-row token masks inside the batch.

A request's grammar (core/grammar.py, Lark text) is compiled once per distinct grammar
and kept in a small cache (Home Assistant sends the same tools on every turn); each row
gets a copy of the compiled matcher, masks its logits before sampling and advances on the
token it took. Compilation runs here, in the sandboxed worker, under llguidance's limits:
a grammar it refuses, or one that takes too long, is the request's `invalid_request`.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable

import llguidance
import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

from assistant.core.events import ToolCall
from assistant.core.grammar import read_calls
from assistant.errors import RequestError

CACHE_SIZE = 16  # compiled grammars kept
# llguidance's own bounds on what one grammar may cost (its defaults are sized for
# servers); with the service's schema limits in front, real tool sets stay far below.
LIMITS = llguidance.LLParserLimits(
    initial_lexer_fuel=500_000,  # ~10 ms of lexer construction
    step_lexer_fuel=200_000,
    max_grammar_size=200_000,
    max_lexer_states=50_000,
    verbose_errors=False,  # errors reach the client: no grammar dump in them
)
MAX_COMPILE_S = 2.0  # a grammar that compiles slower is refused rather than cached


class Constraints:
    """The compiled-grammar cache of one engine (one tokenizer)."""

    def __init__(self, tokenizer: Tokenizer, eos_ids: Iterable[int]) -> None:
        vocab = tokenizer.get_vocab_size()
        self._tokenizer = llguidance.LLTokenizer(
            tokenizer.to_str(), n_vocab=vocab, eos_token=sorted(set(eos_ids))
        )
        self._vocab = vocab
        self._eos = self._tokenizer.eos_token
        self._cache: OrderedDict[str, llguidance.LLMatcher] = OrderedDict()
        self.compile_ms = 0.0  # of the last grammar compiled (not cached)
        self.compiles = 0  # grammars compiled so far (cache misses)

    def _compiled(self, grammar: str) -> llguidance.LLMatcher:
        matcher = self._cache.get(grammar)
        if matcher is not None:
            self._cache.move_to_end(grammar)
            return matcher
        self.compiles += 1
        started = time.perf_counter()
        matcher = llguidance.LLMatcher(self._tokenizer, grammar, log_level=0, limits=LIMITS)
        elapsed = time.perf_counter() - started
        self.compile_ms = round(elapsed * 1000, 2)
        if matcher.is_error():
            raise RequestError("invalid_request", f"grammar refused: {matcher.get_error()[:300]}")
        if elapsed > MAX_COMPILE_S:
            message = f"schema too complex ({elapsed:.1f} s to compile)"
            raise RequestError("invalid_request", message)
        self._cache[grammar] = matcher
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return matcher

    def start(self, grammar: str) -> RowConstraint:
        """A fresh matcher state for one request; RequestError when the grammar is refused."""
        return RowConstraint(self._compiled(grammar).deep_copy(), self._vocab, self._eos)


class RowConstraint:
    """One row's position in its grammar.

    A grammar can fail mid-reply (a mask step over llguidance's fuel limit); the row then
    may only end, and `error` says why, so the request ends in an error, not in a reply
    that breaks its grammar."""

    def __init__(self, matcher: llguidance.LLMatcher, vocab: int, eos: int) -> None:
        self._matcher = matcher
        self._bits = np.zeros((vocab + 31) // 32, dtype=np.int32)
        self._vocab = vocab
        self._eos = eos
        self.error = ""

    def mask(self, logits: npt.NDArray[np.float32]) -> None:
        """Forbid, in place, every token the grammar does not allow next."""
        if not self.error:
            self._matcher.unsafe_compute_mask_ptr(self._bits.ctypes.data, self._bits.nbytes)
            self.error = self._matcher.get_error()
        if self.error:
            keep = logits[self._eos]
            logits[:] = -np.inf
            logits[self._eos] = max(keep, 0.0)
            return
        allowed = np.unpackbits(self._bits.view(np.uint8), bitorder="little")[: self._vocab]
        logits[: self._vocab][allowed == 0] = -np.inf
        logits[self._vocab :] = -np.inf  # padded output rows of some models

    def advance(self, token: int) -> bool:
        """Take the sampled token; True when the grammar is complete (or failed)."""
        if not self.error and not self._matcher.consume_token(token):
            self.error = self._matcher.get_error() or f"token {token} is not allowed here"
        return self.done

    @property
    def done(self) -> bool:
        """The grammar is complete and allows nothing but the end of the turn (or failed)."""
        return bool(self.error) or self._matcher.is_stopped()


def final_calls(
    row: RowConstraint, text: str, finish: str, calls: bool
) -> tuple[str, str, tuple[ToolCall, ...]] | RequestError:
    """A constrained row's (text, finish_reason, tool calls), or the error it ends in.

    A reply that completed a call grammar is the call (no text, finish `tool_calls`); a
    call cut short by max_tokens stays text with finish `length`, as any cut reply."""
    if row.error:
        message = f"the reply could not follow its grammar: {row.error[:200]}"
        return RequestError("invalid_request", message)
    found = read_calls(text) if calls and finish == "stop" else ()
    return ("", "tool_calls", found) if found else (text, finish, ())
