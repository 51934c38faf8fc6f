"""Admitting a unit, pure: the members a deployment starts with (or a scaling adds) are decided
together, all or none.

Each member is decided in order by :func:`services.quota.accounting.decide` (the count limits,
then the budget), against the owner's usage and cost with the members before it; if any is
refused, none is reserved. Since every member adds room and cost (never takes any), that is the
same as the whole unit fitting at once, so the reason gives the unit's figures: what is in use
or reserved without it and what it needs in all, behind the group whose member was refused first
(``web: cpus limit 20 reached: 12 in use or reserved, this deployment needs 16 more``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction

from services.quota.accounting import (
    RESOURCES,
    Amounts,
    Ask,
    Limits,
    costs_after,
    decide,
    limit_of,
)
from services.quota.budget import BUDGET, figure


@dataclass(frozen=True)
class Member:
    """One instance of a unit: its group and what it asks for (its owner is the unit's)."""

    group: str
    ask: Ask


@dataclass(frozen=True)
class Refusal:
    group: str  # the group of the first member refused
    limit: str  # the limit that refused it: a resource, or cost_per_month
    reason: str  # "<group>: <why>", the limit's name first after the group


@dataclass(frozen=True)
class UnitDecision:
    """The refusal (None: admitted), and the owner's usage and cost this month afterwards
    (unchanged when refused)."""

    refusal: Refusal | None
    usage: Amounts
    cost: Fraction

    @property
    def admitted(self) -> bool:
        return self.refusal is None


def decide_unit(
    owner: str,
    members: Sequence[Member],
    usage: Amounts,
    limits: Limits,
    cost: Fraction,
    now: datetime,
    *,
    what: str = "this deployment",
) -> UnitDecision:
    """Admit ``members`` (all ``owner``'s) as one unit, or refuse them all; ``what`` names the
    unit in the reason."""
    asks = [m.ask for m in members]
    if any(a.owner != owner for a in asks):
        raise ValueError(f"a unit is one owner's: {owner}")
    refusals, after = decide(asks, {owner: usage}, {owner: limits}, costs={owner: cost}, now=now)
    first = next((i for i, r in enumerate(refusals) if r is not None), None)
    if first is None:
        cost_after = costs_after(asks, refusals, {owner: cost}, now)[owner]
        return UnitDecision(None, after.get(owner, usage), cost_after)
    member, reason = members[first], refusals[first] or ""
    limit = limit_of(reason)
    why = _unit_reason(limit, reason, member, members, usage, limits, cost, now, what)
    return UnitDecision(Refusal(member.group, limit, f"{member.group}: {why}"), usage, cost)


def _unit_reason(
    limit: str,
    reason: str,
    member: Member,
    members: Sequence[Member],
    usage: Amounts,
    limits: Limits,
    cost: Fraction,
    now: datetime,
    what: str,
) -> str:
    """The member's ``reason`` in the unit's figures (a price not known stays the member's)."""
    if limit in RESOURCES:
        needs = sum(getattr(m.ask.amounts, limit) for m in members)
        return (
            f"{limit} limit {getattr(limits, limit)} reached: {getattr(usage, limit)} in use or "
            f"reserved, {what} needs {needs} more"
        )
    if limit == BUDGET and member.ask.price is not None and limits.cost_per_month is not None:
        adds = sum((m.ask.cost(now) for m in members), Fraction(0))
        return (
            f"{BUDGET} budget {figure(limits.cost_per_month)} would be passed: {figure(cost)} "
            f"spent or committed this month, {what} would add {figure(adds)}"
        )
    return reason
