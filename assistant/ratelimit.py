"""Per-source token buckets: how often one asking device may start a request."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# Buckets kept before full (idle) ones are forgotten; a full bucket is the same as none.
MAX_IDLE_BUCKETS = 1024


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """`per_minute` requests per minute for each key, with bursts of up to `burst`.

    A request takes one token; tokens refill continuously. Keys are sources; requests
    without a source share the `None` bucket.
    """

    def __init__(self, per_minute: float, burst: float, clock: Callable[[], float]) -> None:
        if per_minute <= 0 or burst < 1:
            raise ValueError("per_minute must be > 0 and burst at least 1")
        self.per_minute = per_minute
        self.burst = burst
        self._rate = per_minute / 60.0  # tokens per second
        self._clock = clock
        self._buckets: dict[str | None, _Bucket] = {}

    def allow(self, key: str | None) -> bool:
        """Take a token for `key` if one is there."""
        bucket = self._refilled(key)
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True

    def retry_after_s(self, key: str | None) -> float:
        """Seconds until `key` has a token again (0 when it has one now)."""
        missing = 1.0 - self._refilled(key).tokens
        return max(0.0, missing / self._rate)

    def _refilled(self, key: str | None) -> _Bucket:
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= MAX_IDLE_BUCKETS:
                self._forget_full(now)
            bucket = self._buckets[key] = _Bucket(self.burst, now)
            return bucket
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self._rate)
        bucket.updated = now
        return bucket

    def _forget_full(self, now: float) -> None:
        for key, bucket in list(self._buckets.items()):
            if bucket.tokens + (now - bucket.updated) * self._rate >= self.burst:
                del self._buckets[key]
