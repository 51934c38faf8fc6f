"""A deployment (or a scaling up) decided as one unit, pure: all of its members or none, the
reason naming the group and the limit with the unit's figures; and a Hypothesis property against
an independent oracle (the unit's totals against the limits and the budget)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

import hypothesis.strategies as st
from hypothesis import given, settings

from services.quota.accounting import RESOURCES, Amounts, Ask, Limits, decide, limit_of
from services.quota.budget import BUDGET, projection
from services.quota.units import Member, decide_unit

MID_NOVEMBER = datetime(2026, 11, 15, tzinfo=UTC)  # 384 h to the month's end


def member(
    group: str,
    cpus: int = 1,
    memory_mb: int = 512,
    price: str | None = None,
    lease: timedelta | None = None,
    owner: str = "alice",
) -> Member:
    return Member(
        group,
        Ask(
            str(uuid.uuid4()),
            owner,
            Amounts(1, cpus, memory_mb),
            None if price is None else Decimal(price),
            MID_NOVEMBER + lease if lease else None,
        ),
    )


def test_a_unit_that_fits_reserves_every_member() -> None:
    unit = [member("db", 4, 4096), member("web", 2), member("web", 2)]

    decided = decide_unit(
        "alice", unit, Amounts(1, 1, 512), Limits(instances=4, cpus=9), Fraction(0), MID_NOVEMBER
    )

    assert decided.admitted and decided.refusal is None
    assert decided.usage == Amounts(4, 9, 5632)


def test_one_member_over_a_limit_refuses_them_all_naming_its_group_and_the_units_figures() -> None:
    unit = [member("db", 4), member("web", 2), member("web", 2)]

    decided = decide_unit(
        "alice", unit, Amounts(2, 4, 1024), Limits(cpus=10), Fraction(0), MID_NOVEMBER
    )

    assert decided.refusal is not None
    assert decided.refusal.group == "web" and decided.refusal.limit == "cpus"
    assert decided.refusal.reason == (
        "web: cpus limit 10 reached: 4 in use or reserved, this deployment needs 8 more"
    )
    assert decided.usage == Amounts(2, 4, 1024)  # nothing reserved
    assert limit_of(decided.refusal.reason) == "cpus"  # the metrics' label, behind the group


def test_a_scaling_names_itself() -> None:
    decided = decide_unit(
        "alice",
        [member("web"), member("web")],
        Amounts(3),
        Limits(instances=4),
        Fraction(0),
        MID_NOVEMBER,
        what="scaling web to 5",
    )

    assert decided.refusal is not None
    assert decided.refusal.reason == (
        "web: instances limit 4 reached: 3 in use or reserved, scaling web to 5 needs 2 more"
    )


def test_the_budget_counts_the_whole_unit() -> None:
    # 384 h at 0.25/h: 96 each; 200 already committed, a budget of 400: two fit, not three.
    unit = [member("app", price="0.25"), member("web", price="0.25"), member("web", price="0.25")]

    decided = decide_unit(
        "alice", unit, Amounts(), Limits(cost_per_month=Decimal(400)), Fraction(200), MID_NOVEMBER
    )

    assert decided.refusal is not None and decided.refusal.limit == BUDGET
    assert decided.refusal.reason == (
        "web: cost_per_month budget 400.00 would be passed: 200.00 spent or committed this "
        "month, this deployment would add 288.00"
    )
    assert decided.cost == Fraction(200)

    fits = decide_unit(
        "alice",
        unit[:2],
        Amounts(),
        Limits(cost_per_month=Decimal(400)),
        Fraction(200),
        MID_NOVEMBER,
    )
    assert fits.admitted and fits.cost == Fraction(392)


def test_a_member_of_unknown_price_cannot_be_checked_against_a_budget() -> None:
    unit = [member("db", price="0.1"), member("cache")]

    decided = decide_unit(
        "alice", unit, Amounts(), Limits(cost_per_month=Decimal(1000)), Fraction(0), MID_NOVEMBER
    )

    assert decided.refusal is not None
    assert decided.refusal.reason.startswith(
        "cache: cost_per_month budget 1000.00 cannot be checked: the price of this launch is not "
        "known"
    )


def test_an_empty_unit_is_admitted_and_changes_nothing() -> None:
    decided = decide_unit("alice", [], Amounts(5), Limits(instances=5), Fraction(3), MID_NOVEMBER)

    assert decided.admitted and decided.usage == Amounts(5) and decided.cost == Fraction(3)


# -- the property -------------------------------------------------------------------------------

GROUPS = ("db", "app", "web")
PRICES = (None, "0", "0.0116", "0.25", "1.536")
LEASES = (None, timedelta(minutes=30), timedelta(days=3), timedelta(days=40))

members = st.lists(
    st.builds(
        member,
        st.sampled_from(GROUPS),
        st.integers(1, 8),
        st.integers(1, 8192),
        st.sampled_from(PRICES),
        st.sampled_from(LEASES),
    ),
    max_size=8,
)
maybe = st.none() | st.integers(0, 40)
limits = st.builds(
    Limits,
    maybe,
    maybe,
    st.none() | st.integers(0, 40000),
    st.none() | st.sampled_from([Decimal(0), Decimal("50"), Decimal("400"), Decimal("2000")]),
)
usages = st.builds(Amounts, st.integers(0, 20), st.integers(0, 40), st.integers(0, 30000))


def fits_whole(unit: list[Member], usage: Amounts, limit: Limits, cost: Fraction) -> bool:
    """The oracle: the unit's totals within every limit, and within the budget with every price
    known. An empty unit asks for nothing (a scaling down), so it fits even an owner above a
    limit."""
    if not unit:
        return True
    total = sum((m.ask.amounts for m in unit), Amounts())
    for resource in RESOURCES:
        bound = getattr(limit, resource)
        if bound is not None and getattr(usage + total, resource) > bound:
            return False
    if limit.cost_per_month is None:
        return True
    if any(m.ask.price is None for m in unit):
        return False
    adds = sum((projection(m.ask.price, m.ask.expires_at, MID_NOVEMBER) for m in unit), Fraction())
    return cost + adds <= Fraction(limit.cost_per_month)


@settings(max_examples=400)
@given(members, usages, limits, st.sampled_from([Fraction(0), Fraction(97, 3), Fraction(390)]))
def test_a_unit_is_admitted_only_if_every_member_fits_in_order_and_then_grows_usage_by_it(
    unit: list[Member], usage: Amounts, limit: Limits, cost: Fraction
) -> None:
    decided = decide_unit("alice", unit, usage, limit, cost, MID_NOVEMBER)

    asks = [m.ask for m in unit]
    in_order, _ = decide(
        asks, {"alice": usage}, {"alice": limit}, costs={"alice": cost}, now=MID_NOVEMBER
    )
    assert (
        decided.admitted == all(r is None for r in in_order) == fits_whole(unit, usage, limit, cost)
    )
    if decided.admitted:
        assert decided.usage == usage + sum((m.ask.amounts for m in unit), Amounts())
        assert decided.cost == cost + sum((m.ask.cost(MID_NOVEMBER) for m in unit), Fraction())
        return
    # Refused: nothing reserved, the reason behind the group of the first member refused in
    # order, naming the limit that refused it.
    assert decided.refusal is not None
    assert (decided.usage, decided.cost) == (usage, cost)
    first = next(i for i, r in enumerate(in_order) if r is not None)
    assert decided.refusal.group == unit[first].group
    assert decided.refusal.limit == limit_of(in_order[first] or "")
    assert decided.refusal.reason.startswith(f"{unit[first].group}: {decided.refusal.limit} ")
    assert limit_of(decided.refusal.reason) == decided.refusal.limit
    if decided.refusal.limit in RESOURCES:
        needs = sum(getattr(m.ask.amounts, decided.refusal.limit) for m in unit)
        assert decided.refusal.reason.endswith(f"this deployment needs {needs} more")
