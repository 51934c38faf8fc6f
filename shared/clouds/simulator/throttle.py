"""Request throttling as clouds do it, pure: a token bucket per api key, on a clock the caller
passes in (``time.monotonic`` in the server, a fake one in tests)."""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    """Holds up to ``burst`` tokens, refilled at ``rate`` a second; a call takes one."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.updated = float(burst), now

    def configure(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = min(self.tokens, float(burst))

    def take(self, now: float) -> bool:
        if now > self.updated:
            self.tokens = min(float(self.burst), self.tokens + (now - self.updated) * self.rate)
            self.updated = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class Throttle:
    """One bucket per api key. Rate and burst are read on every call, so changed account
    settings apply at once; tokens already saved are kept, up to the new burst."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def allow(self, key: str, rate: float | None, burst: int) -> bool:
        if rate is None:
            # Unlimited; should a limit come back, its bucket starts full.
            self._buckets.pop(key, None)
            return True
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(rate, burst, now)
        else:
            bucket.configure(rate, burst)
        return bucket.take(now)
