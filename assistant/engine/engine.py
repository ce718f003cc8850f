"""A loaded model as the generator sees it: prompt rendering and fitting, the window, and
the KV cache of the previous prompt's prefix for reuse."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

from assistant.engine.constrain import Constraints
from assistant.engine.decoder import Decoder
from assistant.engine.kvcache import KVCache
from assistant.errors import RequestError
from assistant.model.chat import ChatTemplate
from assistant.model.errors import ModelError

if TYPE_CHECKING:
    from assistant.model.manager import ModelInstance

# Prompts sharing at least this many leading tokens with a kept prompt (the chat
# template's system turn, a conversation's history) reuse its KV cache for them.
MIN_PREFIX = 16
# Memory for the kept prefixes, the most recently used first. Home Assistant sends ~2k
# tokens of instructions, entities and tool schemas with every request, and its next
# request (after a tool ran, or the next turn) repeats them: keeping them makes that
# request start in one short prefill, even when other sources' requests ran in between.
# 192 MiB is ~4,300 tokens of SmolLM2-135M (45 KB a token), ~2,450 of SmolLM2-360M; it
# fits in the 25% headroom the plan gives the worker above its weights and KV budget.
MAX_PREFIX_BYTES = 192 * 2**20


def shared_length(a: npt.NDArray[np.int64], b: npt.NDArray[np.int64]) -> int:
    """How many leading tokens two prompts share."""
    n = min(a.size, b.size)
    diff = np.flatnonzero(a[:n] != b[:n])
    return int(diff[0]) if diff.size else n


class Engine:
    """A loaded model with its tokenizer and chat template."""

    def __init__(
        self,
        decoder: Decoder,
        tokenizer: Tokenizer,
        chat: ChatTemplate,
        stop_ids: frozenset[int],
        context_tokens: int,
        model_id: str,
    ) -> None:
        self.decoder = decoder
        self.tokenizer = tokenizer
        self.chat = chat
        self.stop_ids = stop_ids
        self.context_tokens = context_tokens
        self.model_id = model_id
        self._prefixes: list[tuple[npt.NDArray[np.int64], KVCache]] = []  # oldest use first
        self._constraints: Constraints | None = None

    def constraints(self) -> Constraints:
        """The grammar compiler and cache, built on the first constrained request."""
        if self._constraints is None:
            self._constraints = Constraints(self.tokenizer, self.stop_ids)
        return self._constraints

    def reuse_prefix(self, prompt: list[int]) -> tuple[int, KVCache] | None:
        """The cached KV of the longest prefix `prompt` shares with a kept prompt."""
        ids = np.asarray(prompt, dtype=np.int64)
        best, shared = -1, 0
        for i, (kept, _) in enumerate(self._prefixes):
            if (n := shared_length(ids, kept)) > shared:
                best, shared = i, n
        shared = min(shared, len(prompt) - 1)  # at least one token must still run
        if shared < MIN_PREFIX:
            return None
        entry = self._prefixes.pop(best)
        self._prefixes.append(entry)
        return shared, self.decoder.copy_prefix(entry[1], shared)

    @property
    def max_prefix(self) -> int:
        """Longest prompt prefix kept for reuse, in tokens."""
        per_token = max(self.decoder.kv_bytes_per_token(), 1)
        return min(self.context_tokens, MAX_PREFIX_BYTES // per_token)

    def remember_prefix(self, prompt: list[int], cache: KVCache) -> None:
        """Keep this prompt's KV cache (a copy) for later prompts that start the same way;
        it replaces a kept prompt it extends, and the least recently used go first."""
        length = min(len(prompt), self.max_prefix)
        if length < MIN_PREFIX:
            return
        ids = np.asarray(prompt[:length], dtype=np.int64)
        kept = [(k, c) for k, c in self._prefixes if shared_length(ids, k) < k.size]
        kept.append((ids, self.decoder.copy_prefix(cache, length)))
        while sum(c.nbytes for _, c in kept) > MAX_PREFIX_BYTES:
            kept.pop(0)
        self._prefixes = kept

    @classmethod
    def from_model(cls, model: ModelInstance, context_tokens: int) -> Engine:
        """An engine over a loaded model folder, its window capped by the plan."""
        if model.chat is None:
            raise ModelError(f"model {model.manifest.id} has no chat template")
        stop = set(model.manifest.stop_token_ids)
        for token_id in (model.manifest.eos_token_id, model.manifest.end_of_turn_token_id):
            if token_id is not None:
                stop.add(token_id)
        return cls(
            decoder=Decoder(model.session),
            tokenizer=model.tokenizer,
            chat=model.chat,
            stop_ids=frozenset(stop),
            context_tokens=min(context_tokens, model.manifest.context_length),
            model_id=model.manifest.id,
        )

    def prompt_ids(self, messages: Sequence[tuple[str, str]]) -> list[int]:
        text = self.chat.render_chat([{"role": r, "content": c} for r, c in messages])
        # The template writes any BOS/ChatML markers itself.
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def fit_prompt(self, messages: Sequence[tuple[str, str]], max_tokens: int) -> list[int]:
        """The prompt ids, dropping the oldest turns of a conversation's history (never the
        system prompt or the new message) until the prompt leaves room for a reply of
        `max_tokens` (at most a quarter of the window)."""
        kept = list(messages)
        ids = self.prompt_ids(kept)
        limit = self.context_tokens - min(max_tokens, self.context_tokens // 4)
        first = 1 if kept and kept[0][0] == "system" else 0
        while len(ids) > limit and len(kept) - first > 1:
            del kept[first]
            # A turn is a user message and its answer: never start history with an answer.
            while len(kept) - first > 1 and kept[first][0] == "assistant":
                del kept[first]
            ids = self.prompt_ids(kept)
        return ids

    def check_prompt(self, n_prompt: int) -> None:
        if n_prompt + 1 > self.context_tokens:
            raise RequestError(
                "prompt_too_long",
                f"prompt is {n_prompt:,} tokens; this model's window is "
                f"{self.context_tokens:,} (room is needed for at least one reply token)",
            )
