"""What the simulated cloud does on every call before serving it (throttle, look the account up
in its cache), with no I/O and a clock the test moves by hand."""

from __future__ import annotations

import asyncio

from shared.clouds.simulator.accounts import AccountCache, AccountEntry
from shared.clouds.simulator.model import AccountSettings
from shared.clouds.simulator.throttle import Throttle, TokenBucket
from shared.testing import wait_until


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def takes(bucket: TokenBucket, now: float, calls: int) -> list[bool]:
    return [bucket.take(now) for _ in range(calls)]


def test_a_full_bucket_allows_a_burst_then_refuses() -> None:
    bucket = TokenBucket(rate=1, burst=3, now=0)
    assert takes(bucket, 0, 4) == [True, True, True, False]


def test_tokens_come_back_at_the_rate() -> None:
    bucket = TokenBucket(rate=2, burst=3, now=0)
    takes(bucket, 0, 3)
    assert bucket.take(0.25) is False  # half a token
    assert bucket.take(0.5) is True  # a whole one, taken
    assert bucket.take(0.5) is False
    assert takes(bucket, 1.5, 3) == [True, True, False]


def test_an_idle_bucket_fills_up_to_the_burst_only() -> None:
    bucket = TokenBucket(rate=100, burst=2, now=0)
    takes(bucket, 0, 2)
    assert takes(bucket, 3600, 3) == [True, True, False]


def test_refused_calls_do_not_spend_tokens() -> None:
    bucket = TokenBucket(rate=1, burst=1, now=0)
    assert takes(bucket, 0, 1) == [True]
    assert takes(bucket, 0.5, 5) == [False] * 5
    assert bucket.take(1.0) is True


def test_a_clock_going_back_adds_no_tokens() -> None:
    bucket = TokenBucket(rate=1, burst=1, now=10)
    bucket.take(10)
    assert bucket.take(5) is False
    assert bucket.take(10.5) is False
    assert bucket.take(11) is True


def test_each_api_key_has_its_own_bucket() -> None:
    clock = Clock()
    throttle = Throttle(clock)
    assert [throttle.allow("a", 1, 2) for _ in range(3)] == [True, True, False]
    assert [throttle.allow("b", 1, 2) for _ in range(2)] == [True, True]
    clock.now += 1
    assert throttle.allow("a", 1, 2) is True
    assert throttle.allow("a", 1, 2) is False


def test_without_a_rate_nothing_is_refused() -> None:
    throttle = Throttle(Clock())
    assert all(throttle.allow("a", None, 1) for _ in range(10_000))


def test_changed_settings_apply_at_once() -> None:
    clock = Clock()
    throttle = Throttle(clock)
    assert [throttle.allow("a", 1, 5) for _ in range(2)] == [True, True]  # 3 tokens left
    assert [throttle.allow("a", 1, 1) for _ in range(2)] == [True, False]  # burst now 1
    clock.now += 0.1
    assert throttle.allow("a", 100, 1) is True  # 0.1 s at 100 a second refilled it
    assert all(throttle.allow("a", None, 1) for _ in range(100))  # limit lifted
    assert [throttle.allow("a", 1, 2) for _ in range(3)] == [True, True, False]  # back, full


class Accounts:
    """The table the cache reads, counting reads; ``gate`` holds them until the test opens it."""

    def __init__(self) -> None:
        self.rows = {"k": AccountEntry("hash", AccountSettings())}
        self.reads = 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def load(self, key: str) -> AccountEntry | None:
        self.reads += 1
        await self.gate.wait()
        return self.rows.get(key)


async def test_accounts_are_read_once_per_ttl() -> None:
    table, clock = Accounts(), Clock()
    cache = AccountCache(table.load, ttl=2, clock=clock)
    for _ in range(100):
        assert await cache.get("k") == table.rows["k"]
    assert table.reads == 1
    clock.now += 2
    await cache.get("k")
    assert table.reads == 2


async def test_unknown_keys_are_not_remembered() -> None:
    table = Accounts()
    cache = AccountCache(table.load, clock=Clock())
    assert await cache.get("nobody") is None
    table.rows["nobody"] = AccountEntry("h2", AccountSettings())
    assert await cache.get("nobody") == table.rows["nobody"]


async def test_calls_that_miss_together_share_one_read() -> None:
    table = Accounts()
    table.gate.clear()
    cache = AccountCache(table.load, clock=Clock())
    waiting = [asyncio.create_task(cache.get("k")) for _ in range(50)]
    await wait_until(lambda: table.reads, what="the read begun")
    table.gate.set()
    assert set(await asyncio.gather(*waiting)) == {table.rows["k"]}
    assert table.reads == 1


async def test_a_change_made_here_wins_over_a_read_begun_before_it() -> None:
    table = Accounts()
    table.gate.clear()
    cache = AccountCache(table.load, clock=Clock())
    stale = asyncio.create_task(cache.get("k"))
    await wait_until(lambda: table.reads, what="the read begun")
    changed = AccountEntry("hash", AccountSettings(api_latency=1))
    cache.put("k", changed)
    table.gate.set()
    assert await stale == table.rows["k"]  # it asked first
    assert await cache.get("k") == changed
    assert table.reads == 1


async def test_a_caller_giving_up_does_not_cancel_the_read_of_the_others() -> None:
    table = Accounts()
    table.gate.clear()
    cache = AccountCache(table.load, clock=Clock())
    impatient, patient = (asyncio.create_task(cache.get("k")) for _ in range(2))
    await wait_until(lambda: table.reads, what="the read begun")
    impatient.cancel()
    table.gate.set()
    assert await patient == table.rows["k"]
