"""Budget arithmetic against hand-computed figures: month bounds (UTC), spells clipped to the
month, commitments to the month's or the lease's end, the refusal's wording, the decision of a
batch against a budget, and running spells followed from state changes. No I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction

import pytest

from services.quota.accounting import Ask, Limits, costs_after, decide, limit_of, one_instance
from services.quota.budget import (
    Costed,
    Seen,
    Spell,
    cost_moved,
    cost_this_month,
    figure,
    follow_spells,
    hours,
    money,
    month_of,
    projection,
    refusal,
    shown,
    spent,
)


def utc(day: int, hour: int = 0, minute: int = 0, *, month: int = 11) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


def test_a_month_is_the_utc_calendar_month() -> None:
    assert month_of(utc(26, 10, 50)) == (utc(1), utc(1, month=12))
    assert month_of(datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)) == (
        utc(1, month=12),
        datetime(2027, 1, 1, tzinfo=UTC),
    )
    # 00:30 on the 1st in UTC+2 is still the 30th in UTC.
    east = datetime(2026, 12, 1, 0, 30, tzinfo=timezone(timedelta(hours=2)))
    assert month_of(east) == (utc(1), utc(1, month=12))


def test_hours_are_exact_and_never_negative() -> None:
    assert hours(utc(1, 10), utc(1, 11, 30)) == Fraction(3, 2)
    assert hours(utc(1, 10), utc(1, 10) + timedelta(seconds=1)) == Fraction(1, 3600)
    assert hours(utc(2), utc(1)) == 0


def test_money_is_the_decimal_of_the_float_as_written() -> None:
    assert money(0.1) == Decimal("0.1")
    assert money(None) is None


def test_spent_is_the_running_time_this_month_times_the_price() -> None:
    entry = Costed(
        Decimal("0.04"),
        holds=False,
        spells=(Spell(utc(1, 10), utc(1, 12, 30)), Spell(utc(2, 8), utc(2, 9))),
    )
    # 2.5 h + 1 h at 0.04/h
    assert spent(entry, utc(3)) == Fraction(14, 100)
    # At 09:00 on the 1st nothing had run yet; at 11:00, one hour had.
    assert spent(entry, utc(1, 9)) == 0
    assert spent(entry, utc(1, 11)) == Fraction(4, 100)


def test_a_holding_entry_commits_its_price_to_the_months_end() -> None:
    reserved = Costed(Decimal("0.25"), holds=True)
    # 15 Nov 00:00 to 1 Dec 00:00 is 16 days, 384 h, at 0.25/h: 96.
    assert cost_this_month([reserved], utc(15)) == 96
    assert projection(Decimal("0.25"), None, utc(15)) == 96


def test_a_lease_ends_the_commitment_when_it_ends_first() -> None:
    leased = Costed(Decimal("0.25"), holds=True, expires_at=utc(16, 12))
    assert cost_this_month([leased], utc(15)) == 9  # 36 h
    beyond = Costed(Decimal("0.25"), holds=True, expires_at=utc(5, month=12))
    assert cost_this_month([beyond], utc(15)) == 96  # the month's end comes first
    expired = Costed(Decimal("0.25"), holds=True, expires_at=utc(14))
    assert cost_this_month([expired], utc(15)) == 0


def test_running_spent_and_committed_add_up_without_counting_twice() -> None:
    running = Costed(Decimal("0.5"), holds=True, spells=(Spell(utc(30, 20)),))
    # 30 Nov 22:00: 2 h spent, 2 h to the month's end committed.
    assert cost_this_month([running], utc(30, 22)) == 2
    # Stopped at 21:00, still held (a stopped instance holds): 1 h spent, 2 h committed.
    stopped = Costed(Decimal("0.5"), holds=True, spells=(Spell(utc(30, 20), utc(30, 21)),))
    assert cost_this_month([stopped], utc(30, 22)) == Fraction(3, 2)
    # Terminated at 21:00: spent only.
    ended = Costed(Decimal("0.5"), holds=False, spells=(Spell(utc(30, 20), utc(30, 21)),))
    assert cost_this_month([ended], utc(30, 22)) == Fraction(1, 2)


def test_an_instance_running_across_midnight_on_the_first_starts_the_new_month_afresh() -> None:
    running = Costed(Decimal("0.5"), holds=True, spells=(Spell(utc(30, 22)),))
    # November, at 23:00: 1 h spent, 1 h committed to midnight.
    assert cost_this_month([running], utc(30, 23)) == 1
    # December, at 03:00: only the 3 h since midnight are spent this month, and the rest of
    # December (31 days, 744 h, less 3) is committed: (3 + 741) x 0.5 = 372.
    assert cost_this_month([running], utc(1, 3, month=12)) == 372
    # Terminated at 01:00 on the 1st: 1 h of December spent, nothing committed.
    ended = Costed(Decimal("0.5"), holds=False, spells=(Spell(utc(30, 22), utc(1, 1, month=12)),))
    assert cost_this_month([ended], utc(1, 3, month=12)) == Fraction(1, 2)
    # A spell that ended before the month began costs nothing in it.
    last_month = Costed(Decimal("0.5"), holds=False, spells=(Spell(utc(30, 20), utc(30, 21)),))
    assert cost_this_month([last_month], utc(1, 3, month=12)) == 0


def test_an_entry_of_unknown_price_costs_nothing() -> None:
    assert cost_this_month([Costed(None, holds=True, spells=(Spell(utc(1)),))], utc(2)) == 0


def test_the_refusal_names_the_budget_and_the_figures() -> None:
    reason = refusal(Fraction(96, 10), Decimal(10), Decimal("0.04"), None, utc(30))
    assert reason == (
        "cost_per_month budget 10.00 would be passed: 9.60 spent or committed this month, "
        "this launch would add 0.96 (0.04/h until 2026-12-01 00:00 UTC)"
    )
    assert limit_of(reason) == "cost_per_month"


def test_the_refusal_names_the_lease_end_when_it_comes_first() -> None:
    reason = refusal(Fraction(0), Decimal(1), Decimal("0.0416"), utc(30, 12), utc(1))
    # 29.5 days, 708 h, at 0.0416/h: 29.4528.
    assert reason == (
        "cost_per_month budget 1.00 would be passed: 0.00 spent or committed this month, "
        "this launch would add 29.4528 (0.0416/h until 2026-11-30 12:00 UTC, its lease's end)"
    )


def test_a_launch_reaching_the_budget_exactly_fits_and_a_cent_more_does_not() -> None:
    assert refusal(Fraction(904, 100), Decimal(10), Decimal("0.04"), None, utc(30)) is None
    assert refusal(Fraction(905, 100), Decimal(10), Decimal("0.04"), None, utc(30)) is not None


def test_an_unknown_price_is_refused_to_an_owner_with_a_budget_only() -> None:
    assert refusal(Fraction(0), Decimal(10), None, None, utc(1)) == (
        "cost_per_month budget 10.00 cannot be checked: the price of this launch is not known "
        "yet (no catalog read for an account it may go to)"
    )
    assert refusal(Fraction(10**6), None, None, None, utc(1)) is None


def test_figures_show_two_to_four_decimals() -> None:
    assert figure(Decimal(10)) == "10.00"
    assert figure(Decimal("0.0416")) == "0.0416"
    assert figure(Fraction(1, 3)) == "0.3333"
    assert figure(Decimal("0.5")) == "0.50"
    assert shown(Fraction(2, 3)) == Decimal("0.6667")


def test_costs_are_exact_where_floats_are_not() -> None:
    # 3600 one-second spells at 0.1/h cost 0.1 exactly; floats would not add up to it.
    second = timedelta(seconds=1)
    spells = tuple(Spell(utc(1) + n * second, utc(1) + (n + 1) * second) for n in range(3600))
    assert cost_this_month([Costed(money(0.1), holds=False, spells=spells)], utc(2)) == Fraction(
        1, 10
    )


def asks(count: int, price: str, **extra: object) -> list[Ask]:
    return [
        Ask(f"i{n}", "alice", one_instance(1, 512), Decimal(price), **extra)  # type: ignore[arg-type]
        for n in range(count)
    ]


def test_a_batch_against_a_budget_that_fits_exactly_five_admits_five() -> None:
    # 384 h to the month's end at 0.25/h: 96 each; a budget of 480 fits 5.
    batch = asks(200, "0.25")
    limits = {"alice": Limits(cost_per_month=Decimal(480))}
    refusals, after = decide(batch, {}, limits, costs={}, now=utc(15))
    assert [r is None for r in refusals].count(True) == 5
    assert refusals[:5] == [None] * 5
    assert refusals[5] == (
        "cost_per_month budget 480.00 would be passed: 480.00 spent or committed this month, "
        "this launch would add 96.00 (0.25/h until 2026-12-01 00:00 UTC)"
    )
    assert after["alice"].instances == 5
    assert costs_after(batch, refusals, {}, utc(15)) == {"alice": 480}


def test_count_limits_are_decided_before_the_budget() -> None:
    limits = {"alice": Limits(instances=1, cost_per_month=Decimal(0))}
    refusals, _ = decide(asks(1, "1"), {}, limits, costs={}, now=utc(15))
    assert refusals[0] is not None and limit_of(refusals[0]) == "cost_per_month"
    refusals, _ = decide(asks(2, "0"), {}, limits, costs={}, now=utc(15))
    assert refusals[0] is None and limit_of(refusals[1] or "") == "instances"


def test_what_is_spent_already_counts_against_the_budget() -> None:
    limits = {"alice": Limits(cost_per_month=Decimal(100))}
    refusals, _ = decide(asks(2, "0.25"), {}, limits, costs={"alice": Fraction(4)}, now=utc(15))
    assert refusals[0] is None and refusals[1] is not None  # 4 + 96 fits, + 96 more does not


def test_a_leased_launch_commits_only_to_its_lease_end() -> None:
    limits = {"alice": Limits(cost_per_month=Decimal(480))}
    leased = asks(200, "0.25", expires_at=utc(16))  # 24 h: 6 each
    refusals, _ = decide(leased, {}, limits, costs={}, now=utc(15))
    assert refusals.count(None) == 80


def test_a_budget_without_a_time_is_a_mistake() -> None:
    with pytest.raises(ValueError, match="give now"):
        decide(asks(1, "1"), {}, {"alice": Limits(cost_per_month=Decimal(1))})


# -- spells ---------------------------------------------------------------------------------


def test_running_opens_a_spell_and_any_other_state_closes_it() -> None:
    changes = [Seen(True, utc(1, 10)), Seen(False, utc(1, 11)), Seen(True, utc(1, 12))]
    assert follow_spells(None, changes) == [
        Spell(utc(1, 10), utc(1, 11)),
        Spell(utc(1, 12)),
    ]


def test_a_redelivered_change_writes_nothing_new() -> None:
    closed = Spell(utc(1, 10), utc(1, 11))
    # The running of 10:00 again, after the stop of 11:00: no new spell.
    assert follow_spells(closed, [Seen(True, utc(1, 10))]) == []
    # The stop again: the spell is closed already.
    assert follow_spells(closed, [Seen(False, utc(1, 11))]) == []
    # A stop older than the open spell does not close it.
    assert follow_spells(Spell(utc(1, 12)), [Seen(False, utc(1, 11))]) == []
    # A stop at the very instant the open spell began may be from before a restart: the spell
    # stays open; a termination then ends it.
    assert follow_spells(Spell(utc(1, 12)), [Seen(False, utc(1, 12))]) == []
    assert follow_spells(Spell(utc(1, 12)), [Seen(False, utc(1, 12), final=True)]) == [
        Spell(utc(1, 12), utc(1, 12))
    ]
    # Running again while it runs: nothing.
    assert follow_spells(Spell(utc(1, 12)), [Seen(True, utc(1, 13))]) == []


def test_a_cost_is_reported_again_when_it_moved_a_cent_or_a_month_began() -> None:
    assert not cost_moved(Decimal("1.00"), utc(15), Fraction(1005, 1000), utc(16))
    assert cost_moved(Decimal("1.00"), utc(15), Fraction(101, 100), utc(16))
    assert cost_moved(Decimal("1.00"), utc(30), Fraction(1005, 1000), utc(1, month=12))
    assert not cost_moved(Decimal("0"), None, Fraction(0), utc(1))
