"""shared.loops.every: the step at its interval, an outage logged and backed off, anything else
raised. Scripted steps and a fake sleep that records each wait (no time passes); structlog's
capture_logs shows the lines written."""

from __future__ import annotations

import asyncpg
import pytest
from structlog.testing import capture_logs

from shared.loops import Backoff, every


class Stop(Exception):
    """Raised by the fake sleep to end the (otherwise endless) loop after some waits."""


class FakeSleep:
    def __init__(self, waits: int) -> None:
        self.waits: list[float] = []
        self._left = waits

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self._left -= 1
        if self._left == 0:
            raise Stop


class ScriptedStep:
    """A step whose runs, one after another, return the next of ``outcomes`` or raise it if it is
    an exception (return None once they run out); ``runs`` counts them."""

    def __init__(self, *outcomes: float | Exception | None) -> None:
        self._outcomes = iter(outcomes)
        self.runs = 0

    async def __call__(self) -> float | None:
        self.runs += 1
        outcome = next(self._outcomes, None)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


async def test_the_step_runs_at_once_then_after_each_interval() -> None:
    sleep, step = FakeSleep(waits=3), ScriptedStep()
    with pytest.raises(Stop):
        await every(60, step, name="pruning", sleep=sleep)
    assert step.runs == 3 and sleep.waits == [60, 60, 60]


async def test_a_step_may_say_when_the_next_one_comes() -> None:
    sleep, step = FakeSleep(waits=3), ScriptedStep(0.0, None, 5.0)
    with pytest.raises(Stop):
        await every(60, step, name="claiming", sleep=sleep)
    assert sleep.waits == [0.0, 60, 5.0]


async def test_an_outage_is_logged_backed_off_and_recovered_from() -> None:
    sleep = FakeSleep(waits=6)
    down = asyncpg.CannotConnectNowError("the database system is starting up")
    step = ScriptedStep(down, down, down, None, down, None)
    with capture_logs() as logs, pytest.raises(Stop):
        await every(
            60,
            step,
            name="drift_repair",
            event="reconcile_skipped",
            backoff=Backoff(first=1, ceiling=3),
            sleep=sleep,
        )
    # 1, 2, then capped at 3; a success resets the backoff.
    assert sleep.waits == [1, 2, 3, 60, 1, 60]
    assert [(e["event"], e["loop"], e["retry_in"]) for e in logs] == [
        ("reconcile_skipped", "drift_repair", 1),
        ("reconcile_skipped", "drift_repair", 2),
        ("reconcile_skipped", "drift_repair", 3),
        ("reconcile_skipped", "drift_repair", 1),
    ]
    assert logs[0]["log_level"] == "warning" and "CannotConnectNowError" in logs[0]["error"]


async def test_an_error_other_than_an_outage_propagates() -> None:
    sleep, step = FakeSleep(waits=10), ScriptedStep(None, ValueError("a bug"))
    with capture_logs() as logs, pytest.raises(ValueError, match="a bug"):
        await every(60, step, name="pruning", sleep=sleep)
    assert step.runs == 2 and sleep.waits == [60] and logs == []


async def test_a_wake_up_shortens_the_interval_but_not_an_outage_wait() -> None:
    sleep, woken = FakeSleep(waits=0), FakeSleep(waits=2)
    step = ScriptedStep(None, OSError("connection refused"), None)
    with capture_logs(), pytest.raises(Stop):
        await every(0.5, step, name="webhook_delivery", wait=woken, sleep=sleep)
    assert woken.waits == [0.5, 0.5] and sleep.waits == [1.0]
