"""How much Boreas may ask of one cloud account: calls in flight, and calls per second.

Real clouds throttle (EC2 answers ``RequestLimitExceeded``); a broker that shares an account
among many users must stay under the limit rather than find it. Each account gets a
:class:`CallBudget`: a cap on calls in flight and a token bucket for the rate. When the cloud
throttles anyway, :meth:`CallBudget.throttled` pauses the account's calls for a growing while.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from libcloud.common.exceptions import RateLimitReachedError

THROTTLE_CODES = ("RequestLimitExceeded", "Throttling", "ThrottlingException", "TooManyRequests")


def is_throttle(error: BaseException) -> bool:
    """Whether a cloud error says "too many requests" rather than "this request is wrong"."""
    if isinstance(error, RateLimitReachedError):
        return True
    if getattr(error, "code", None) in THROTTLE_CODES or getattr(error, "status", None) == 429:
        return True
    text = str(error)
    return any(code in text for code in THROTTLE_CODES)


@dataclass
class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up. Pure: the clock is given."""

    rate: float
    burst: float
    clock: Callable[[], float] = time.monotonic
    _tokens: float = field(init=False)
    _stamp: float = field(init=False)

    def __post_init__(self) -> None:
        self._tokens = self.burst
        self._stamp = self.clock()

    def wait_needed(self) -> float:
        """Take a token if there is one (0.0); otherwise how long until there is one."""
        now = self.clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self.rate


@dataclass
class CallBudget:
    max_in_flight: int
    rate: float
    burst: float | None = None
    clock: Callable[[], float] = time.monotonic
    _slots: asyncio.Semaphore = field(init=False)
    _bucket: TokenBucket = field(init=False)
    _paused_until: float = field(default=0.0, init=False)
    _penalty: float = field(default=0.0, init=False)
    in_flight: int = field(default=0, init=False)
    throttles: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self._slots = asyncio.Semaphore(self.max_in_flight)
        self._bucket = TokenBucket(self.rate, self.burst or max(1.0, self.rate), self.clock)

    @contextlib.asynccontextmanager
    async def call(self) -> AsyncIterator[None]:
        """Hold a slot and a token for the length of one cloud call."""
        async with self._slots:
            while True:
                pause = self._paused_until - self.clock()
                wait = pause if pause > 0 else self._bucket.wait_needed()
                if wait <= 0:
                    break
                await asyncio.sleep(wait)
            self.in_flight += 1
            try:
                yield
            finally:
                self.in_flight -= 1

    def throttled(self) -> float:
        """The cloud refused a call as too many: pause this account (0.5 s, doubling to 30 s);
        returns the pause."""
        self.throttles += 1
        self._penalty = min(30.0, self._penalty * 2 or 0.5)
        self._paused_until = max(self._paused_until, self.clock() + self._penalty)
        return self._penalty

    @property
    def pause(self) -> float:
        """Seconds until calls may go again after a throttle (0 when they may now)."""
        return max(0.0, self._paused_until - self.clock())

    def succeeded(self) -> None:
        self._penalty = 0.0
