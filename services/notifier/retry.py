"""When to try a webhook delivery again, and what an answer means. Pure: no I/O, no clock."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta


class Verdict(enum.Enum):
    DELIVERED = "delivered"  # 2xx
    GONE = "gone"  # 410: the receiver asks never to be called again
    FAILED = "failed"  # anything else, or no answer: try again


def judge(status_code: int | None) -> Verdict:
    if status_code is not None and 200 <= status_code < 300:
        return Verdict.DELIVERED
    if status_code == 410:
        return Verdict.GONE
    return Verdict.FAILED


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter over a horizon.

    The n-th retry waits ``first * 2**(n-1)`` seconds, at most ``maximum``, of which a random half
    ("equal jitter"): receivers that come back are not hit by every sender at the same instant,
    and no wait is shorter than half its step. A delivery whose next attempt would fall later
    than ``horizon`` after the event is given up.
    """

    first: float
    maximum: float
    horizon: float

    def delay(self, attempts: int, random: Callable[[], float]) -> float:
        # The exponent is capped: 2**1024 overflows a float long before any horizon ends.
        step = min(self.maximum, self.first * 2 ** min(max(attempts - 1, 0), 60))
        return step / 2 + random() * step / 2

    def next_attempt(
        self,
        *,
        attempts: int,
        created_at: datetime,
        now: datetime,
        random: Callable[[], float],
    ) -> datetime | None:
        """After ``attempts`` failed attempts: when to try next, or None to give up."""
        at = now + timedelta(seconds=self.delay(attempts, random))
        return None if at > created_at + timedelta(seconds=self.horizon) else at
