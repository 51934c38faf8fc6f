"""Chargeback arithmetic: seconds to hours per account, summed per owner; the period asked for."""

from datetime import UTC, datetime, timedelta

import pytest

from services.gateway.chargeback import Hours, RunningSeconds, per_owner, period

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def test_hours_per_account_and_their_sum_per_owner_in_first_seen_order() -> None:
    rows = [
        RunningSeconds("bob", "acct-1", 1800, 3600, 1800 * 1024),
        RunningSeconds("alice", "acct-1", 3600, 7200, 3600 * 2048),
        RunningSeconds("alice", "acct-2", 5400, 5400, 5400 * 512),
    ]
    bob, alice = per_owner(rows)
    assert (bob.owner, alice.owner) == ("bob", "alice")
    assert bob.accounts == {"acct-1": Hours(0.5, 1.0, 512.0)}
    assert alice.accounts == {"acct-1": Hours(1.0, 2.0, 2048.0), "acct-2": Hours(1.5, 1.5, 768.0)}
    assert alice.total == Hours(2.5, 3.5, 2816.0)


def test_hours_are_rounded_to_six_decimals_per_account_before_they_are_summed() -> None:
    [only] = per_owner([RunningSeconds("c", "a", 1, 1, 1), RunningSeconds("c", "b", 1, 1, 1)])
    assert only.accounts["a"] == Hours(0.000278, 0.000278, 0.000278)
    assert only.total == Hours(0.000556, 0.000556, 0.000556)


def test_nothing_ran_nothing_to_charge() -> None:
    assert per_owner([]) == []


def test_the_period_defaults_to_the_last_thirty_days_up_to_now() -> None:
    assert period(None, None, NOW) == (NOW - timedelta(days=30), NOW)
    end = NOW - timedelta(days=1)
    assert period(None, end, NOW) == (end - timedelta(days=30), end)
    start = NOW - timedelta(hours=2)
    assert period(start, None, NOW) == (start, NOW)


@pytest.mark.parametrize("start", [NOW, NOW + timedelta(seconds=1)])
def test_a_period_that_ends_before_it_starts_is_refused(start: datetime) -> None:
    with pytest.raises(ValueError, match="`from` must be before `to`"):
        period(start, NOW, NOW)
