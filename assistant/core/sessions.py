"""Conversation sessions: requests with the same key share the turns before them.

The store lives in the service process (the worker stays stateless): a bounded number of
sessions, least recently used forgotten first, each forgotten after `idle_s` without a
turn, each keeping at most `max_turns` user/assistant pairs. The engine then drops the
oldest of those turns, token-exactly, when the prompt would not fit its window
(`Engine.fit_prompt`); the character budget here only keeps hopeless history out of the
worker's frames.

Concurrency: a request sees the history as it was when it was submitted; its own turn is
appended when it succeeds, so two requests racing on one session do not see each other
and their turns are stored in the order they finish.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from assistant.config import SessionsConfig

# A token is rarely longer than this many characters: history beyond
# context_tokens * CHARS_PER_TOKEN could never fit the window, so it is not sent at all.
CHARS_PER_TOKEN = 16
# Finish reasons of a reply worth remembering (a cancelled or failed one is not a turn).
KEPT_FINISH_REASONS = frozenset({"stop", "length"})
_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")


def valid_key(key: str) -> bool:
    """Whether `key` is a session key: `[A-Za-z0-9_-]{1,64}` (an MQTT topic level too)."""
    return _KEY.fullmatch(key) is not None


@dataclass(frozen=True)
class Turn:
    user: str
    assistant: str

    @property
    def chars(self) -> int:
        return len(self.user) + len(self.assistant)


@dataclass
class _Session:
    turns: list[Turn] = field(default_factory=list)
    used: float = 0.0  # clock of the last turn or read


class SessionStore:
    """In-memory sessions, keyed by `[A-Za-z0-9_-]{1,64}`. Not thread-safe: the loop owns it."""

    def __init__(
        self,
        config: SessionsConfig,
        max_chars: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.max_chars = max_chars
        self._clock = clock
        self._sessions: OrderedDict[str, _Session] = OrderedDict()  # oldest use first

    def __len__(self) -> int:
        self.expire()
        return len(self._sessions)

    def __contains__(self, key: object) -> bool:
        self.expire()
        return key in self._sessions

    def history(self, key: str | None) -> tuple[Turn, ...]:
        """The turns of a session, oldest first (empty for None or an unknown key)."""
        self.expire()
        if key is None or key not in self._sessions:
            return ()
        session = self._sessions[key]
        self._touch(key, session)
        return tuple(session.turns)

    def append(self, key: str, user: str, assistant: str) -> None:
        """Record a successful turn; trims the session and evicts the least recently used."""
        self.expire()
        session = self._sessions.get(key) or _Session()
        session.turns.append(Turn(user, assistant))
        del session.turns[: max(0, len(session.turns) - self.config.max_turns)]
        if self.max_chars is not None:
            while len(session.turns) > 1 and sum(t.chars for t in session.turns) > self.max_chars:
                del session.turns[0]
        self._touch(key, session)
        while len(self._sessions) > self.config.max_sessions:
            self._sessions.popitem(last=False)

    def reset(self, key: str) -> bool:
        """Forget a session; False if there was none."""
        return self._sessions.pop(key, None) is not None

    def expire(self) -> int:
        """Forget the sessions idle for `idle_s` or longer; how many were forgotten."""
        cutoff = self._clock() - self.config.idle_s
        dropped = 0
        while self._sessions:
            key, oldest = next(iter(self._sessions.items()))
            if oldest.used > cutoff:
                break
            del self._sessions[key]
            dropped += 1
        return dropped

    def _touch(self, key: str, session: _Session) -> None:
        session.used = self._clock()
        self._sessions[key] = session
        self._sessions.move_to_end(key)


def session_key(raw: str) -> str:
    """A session key from an outside id (a Hermes siteId, a Wyoming conversation id): the id
    itself when it is a valid key, else a stable digest of it."""
    if valid_key(raw):
        return raw
    return "h_" + hashlib.sha256(raw.encode("utf-8", "replace")).hexdigest()[:40]
