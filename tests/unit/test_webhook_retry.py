"""The retry policy of webhook deliveries, and how answers are judged."""

from datetime import UTC, datetime, timedelta

import pytest

from services.notifier.retry import RetryPolicy, Verdict, judge

START = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = RetryPolicy(first=5, maximum=3600, horizon=3 * 24 * 3600)


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, Verdict.DELIVERED),
        (204, Verdict.DELIVERED),
        (299, Verdict.DELIVERED),
        (410, Verdict.GONE),
        (301, Verdict.FAILED),
        (400, Verdict.FAILED),
        (404, Verdict.FAILED),
        (429, Verdict.FAILED),
        (500, Verdict.FAILED),
        (None, Verdict.FAILED),
    ],
)
def test_answers_are_judged(status: int | None, verdict: Verdict) -> None:
    assert judge(status) is verdict


def test_delays_double_up_to_the_ceiling_with_half_of_each_step_random() -> None:
    lowest = [POLICY.delay(n, lambda: 0.0) for n in range(1, 13)]
    highest = [POLICY.delay(n, lambda: 1.0) for n in range(1, 13)]
    assert highest[:5] == [5, 10, 20, 40, 80]
    assert lowest[:5] == [2.5, 5, 10, 20, 40]
    assert highest[-1] == 3600 and lowest[-1] == 1800  # capped
    assert all(
        low < POLICY.delay(n, lambda: 0.5) < high
        for n, low, high in zip(range(1, 13), lowest, highest, strict=True)
    )


def test_a_delivery_is_given_up_when_its_next_attempt_would_pass_the_horizon() -> None:
    policy = RetryPolicy(first=60, maximum=60, horizon=300)
    # A minute after the event: the next attempt (at most a minute later) is within the horizon.
    assert policy.next_attempt(
        attempts=1, created_at=START, now=START + timedelta(seconds=60), random=lambda: 1.0
    ) == START + timedelta(seconds=120)
    # Four and a half minutes after: a full step would land past five minutes.
    assert (
        policy.next_attempt(
            attempts=5, created_at=START, now=START + timedelta(seconds=270), random=lambda: 1.0
        )
        is None
    )


def test_the_default_schedule_keeps_trying_for_the_whole_horizon() -> None:
    now, attempts = START, 0
    while (
        at := POLICY.next_attempt(
            attempts=attempts + 1, created_at=START, now=now, random=lambda: 1.0
        )
    ) is not None:
        now, attempts = at, attempts + 1
    assert START + timedelta(days=2, hours=23) <= now <= START + timedelta(days=3)
    # Ten doubling waits (5 s … 2560 s, 85 min in all), then hourly until 72 h: 70 more.
    assert attempts == 80


def test_a_long_run_of_failures_does_not_overflow_the_delay() -> None:
    tight = RetryPolicy(first=0.1, maximum=1, horizon=3 * 24 * 3600)
    assert tight.delay(5000, lambda: 1.0) == 1
