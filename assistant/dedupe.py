"""Remembering request ids for a while, so a QoS 1 redelivery is not run twice."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class RecentIds:
    """Ids seen within `ttl_s`, at most `capacity` of them (oldest forgotten first)."""

    def __init__(
        self,
        ttl_s: float = 600.0,
        capacity: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.capacity = capacity
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()

    def seen_before(self, key: str) -> bool:
        """Record `key`; True if it was already recorded within the window."""
        now = self._clock()
        while self._seen:
            oldest, at = next(iter(self._seen.items()))
            if now - at < self.ttl_s and len(self._seen) < self.capacity:
                break
            del self._seen[oldest]
        if key in self._seen:
            return True
        self._seen[key] = now
        return False

    def forget(self, key: str) -> None:
        """Let `key` in again (its request was refused without running)."""
        self._seen.pop(key, None)

    def __len__(self) -> int:
        return len(self._seen)
