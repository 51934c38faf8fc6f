"""Quota arithmetic, pure: whether a launch fits, and what each instance event does to usage.

Policy: a launch *reserves* its instance, cpus and memory (and, against a budget, its cost to
the month's or its lease's end: :mod:`services.quota.budget`) the moment it is admitted, so two
launches can never both squeeze under a limit. Placement turns the reservation into use (no
change in the numbers). Rejection never reserved anything; failure and termination release.
A *stopped* instance still counts: its cloud still holds it and it can start again at any time
without asking quota; chargeback, by contrast, counts running time only.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction
from typing import Protocol

from services.quota import budget

RESOURCES = ("instances", "cpus", "memory_mb")


@dataclass(frozen=True)
class Amounts:
    instances: int = 0
    cpus: int = 0
    memory_mb: int = 0

    def __add__(self, other: Amounts) -> Amounts:
        return Amounts(*(getattr(self, r) + getattr(other, r) for r in RESOURCES))

    def __sub__(self, other: Amounts) -> Amounts:
        return Amounts(*(getattr(self, r) - getattr(other, r) for r in RESOURCES))


@dataclass(frozen=True)
class Limits:
    """None: unlimited. ``cost_per_month``: a budget, in the catalogs' price unit."""

    instances: int | None = None
    cpus: int | None = None
    memory_mb: int | None = None
    cost_per_month: Decimal | None = None


def one_instance(cpus: int, memory_mb: int) -> Amounts:
    return Amounts(1, cpus, memory_mb)


def refusal(usage: Amounts, limits: Limits, request: Amounts) -> str | None:
    """Why the request does not fit, or None when it does."""
    for resource in RESOURCES:
        limit = getattr(limits, resource)
        if limit is None:
            continue
        wanted = getattr(usage, resource) + getattr(request, resource)
        if wanted > limit:
            return (
                f"{resource} limit {limit} reached: {getattr(usage, resource)} in use or "
                f"reserved, this launch needs {getattr(request, resource)} more"
            )
    return None


def limit_of(reason: str) -> str:
    """The resource whose limit a :func:`refusal` names (its first word), also behind the group
    a deployment's refusal starts with (``web: cpus limit …``: :mod:`services.quota.units`)."""
    first, _, rest = reason.partition(" ")
    return rest.split(" ", 1)[0] if first.endswith(":") else first


@dataclass(frozen=True)
class Ask:
    """A launch to decide: who asks, for what."""

    key: str  # the instance id
    owner: str
    amounts: Amounts
    price: Decimal | None = None  # per hour; None: not known
    expires_at: datetime | None = None  # its lease's end; None: no lease

    def cost(self, now: datetime) -> Fraction:
        """What it commits from ``now`` to the month's or its lease's end."""
        return budget.projection(self.price, self.expires_at, now)

    def entry(
        self, status: Status, *, awaiting: bool = False, deployment_id: uuid.UUID | None = None
    ) -> Entry:
        """Its ledger entry once decided (``status``)."""
        return Entry(
            uuid.UUID(self.key),
            self.owner,
            self.amounts,
            status,
            self.price,
            self.expires_at,
            awaiting,
            deployment_id,
        )


def decide(
    asks: Sequence[Ask],
    usage: Mapping[str, Amounts],
    limits: Mapping[str, Limits],
    *,
    costs: Mapping[str, Fraction] | None = None,
    now: datetime | None = None,
) -> tuple[list[str | None], dict[str, Amounts]]:
    """Decide ``asks`` in order, each against its owner's usage and cost this month (``costs``
    at ``now``) with the launches admitted before it: the count limits first, then the budget.
    The refusal of each (None: admitted), and every owner's usage afterwards (their costs
    afterwards: :func:`costs_after`)."""
    after = dict(usage)
    spent = dict(costs or {})
    refusals: list[str | None] = []
    for ask in asks:
        held = after.get(ask.owner, Amounts())
        owner_limits = limits.get(ask.owner, Limits())
        reason = refusal(held, owner_limits, ask.amounts) or _over_budget(
            ask, owner_limits, spent.get(ask.owner, Fraction(0)), now
        )
        if reason is None:
            after[ask.owner] = held + ask.amounts
            if now is not None:
                spent[ask.owner] = spent.get(ask.owner, Fraction(0)) + ask.cost(now)
        refusals.append(reason)
    return refusals, after


def _over_budget(ask: Ask, limits: Limits, cost: Fraction, now: datetime | None) -> str | None:
    if limits.cost_per_month is None:
        return None
    if now is None:
        raise ValueError("a budget is decided at a time: give now")
    return budget.refusal(cost, limits.cost_per_month, ask.price, ask.expires_at, now)


def costs_after(
    asks: Sequence[Ask],
    refusals: Sequence[str | None],
    costs: Mapping[str, Fraction],
    now: datetime,
) -> dict[str, Fraction]:
    """Every owner's cost this month once the admitted ``asks`` hold: ``costs`` (before) plus
    what each admitted launch commits."""
    after = dict(costs)
    for ask, reason in zip(asks, refusals, strict=True):
        if reason is None:
            after[ask.owner] = after.get(ask.owner, Fraction(0)) + ask.cost(now)
    return after


class Status(StrEnum):
    RESERVED = "reserved"  # admitted, not yet placed
    ACTIVE = "active"  # placed on a cloud
    RELEASED = "released"  # failed or terminated: counts no more
    REJECTED = "rejected"  # never counted


HOLDS = frozenset({Status.RESERVED, Status.ACTIVE})


class _Expiring(Protocol):
    @property
    def expires_at(self) -> datetime: ...


class Launch(Protocol):
    """What a launch asks for, as a launch request and a deployment's member both say it."""

    @property
    def instance_id(self) -> uuid.UUID: ...
    @property
    def cpus(self) -> int: ...
    @property
    def memory_mb(self) -> int: ...
    @property
    def price_per_hour(self) -> float | None: ...
    @property
    def lease(self) -> _Expiring | None: ...


def ask_of(launch: Launch, owner: str) -> Ask:
    """What ``launch`` asks of ``owner``'s quota: one instance, its price, its lease's end."""
    return Ask(
        str(launch.instance_id),
        owner,
        one_instance(launch.cpus, launch.memory_mb),
        budget.money(launch.price_per_hour),
        launch.lease.expires_at if launch.lease else None,
    )


@dataclass(frozen=True)
class Entry:
    """A ledger entry: a launch quota decided, and where it stands."""

    instance_id: uuid.UUID
    owner: str
    amounts: Amounts
    status: Status
    price: Decimal | None = None  # per hour: admitted at, then placed at
    expires_at: datetime | None = None  # its lease's end
    awaiting: bool = False  # reserved, held for an approval
    deployment_id: uuid.UUID | None = None  # a member of a deployment, admitted with it

    @property
    def holds(self) -> bool:
        return self.status in HOLDS


def after_placement(status: Status | None) -> Status | None:
    """The new status when the instance is placed, or None for no change."""
    return Status.ACTIVE if status is Status.RESERVED else None


def after_end(status: Status | None) -> Status | None:
    """The new status when the instance failed or terminated, or None for no change."""
    return Status.RELEASED if status in HOLDS else None


def transfer(giver: Amounts, taker: Amounts, amounts: Amounts) -> tuple[Amounts, Amounts]:
    """The previous and the new owner's usage once an instance holding ``amounts`` changes
    hands (an admin gave it away). The new owner may end up above a limit: that was the admin's
    decision, and only their next launches are refused. The previous owner's usage never goes
    below zero; if it had drifted that low, reconciliation repairs it from the ledger."""
    left = giver - amounts
    return Amounts(*(max(0, getattr(left, r)) for r in RESOURCES)), taker + amounts


def usage_delta(old: Status | None, new: Status, amounts: Amounts) -> Amounts:
    """How usage moves when an instance goes from ``old`` to ``new``."""
    held_before, held_after = old in HOLDS, new in HOLDS
    if held_after and not held_before:
        return amounts
    if held_before and not held_after:
        return Amounts() - amounts
    return Amounts()
