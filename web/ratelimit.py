"""A token bucket per member against message floods."""

from __future__ import annotations

import math
import time


class RateLimiter:
    def __init__(self, *, burst: int, per_second: float) -> None:
        self._burst = float(burst)
        self._rate = per_second
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, updated)

    def acquire(self, key: str) -> float:
        """Take a token; 0.0 when allowed, else the seconds to wait before retrying."""
        if self._rate <= 0:
            return 0.0
        now = time.monotonic()
        tokens, updated = self._buckets.get(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - updated) * self._rate)
        if tokens >= 1:
            self._buckets[key] = (tokens - 1, now)
            if len(self._buckets) > 100_000:
                self._forget_full(now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1 - tokens) / self._rate

    @staticmethod
    def retry_after_header(wait: float) -> str:
        return str(max(1, math.ceil(wait)))

    def _forget_full(self, now: float) -> None:
        full = [
            key
            for key, (tokens, updated) in self._buckets.items()
            if tokens + (now - updated) * self._rate >= self._burst
        ]
        for key in full:
            del self._buckets[key]
