"""What quota says of an owner's usage: ``quota.usage_changed``, with their cost this month."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from fractions import Fraction

import asyncpg

from services.quota import repository
from services.quota.accounting import Amounts, Limits
from services.quota.budget import cost_this_month, month_of, shown
from services.quota.ports import DecisionsRepository
from shared.consumer import BatchUnitOfWork
from shared.events import Envelope, QuotaUsageChanged, ResourceLimits, ResourceUsage


def _float(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def usage_event(
    owner: str, usage: Amounts, limits: Limits, cost: Fraction | Decimal = Decimal(0)
) -> QuotaUsageChanged:
    """``cost``: spent and committed this month, shown to 4 decimals."""
    return QuotaUsageChanged(
        owner=owner,
        usage=ResourceUsage(
            instances=usage.instances,
            cpus=usage.cpus,
            memory_mb=usage.memory_mb,
            cost_this_month=float(shown(cost)),
        ),
        limits=ResourceLimits(
            instances=limits.instances,
            cpus=limits.cpus,
            memory_mb=limits.memory_mb,
            cost_per_month=_float(limits.cost_per_month),
        ),
    )


async def costs_at(
    conn: asyncpg.Connection,
    owners: list[str] | None,
    now: datetime,
    repo: DecisionsRepository = repository,
) -> dict[str, Fraction]:
    """Each owner's cost this month at ``now`` (None: every owner with a cost), from the
    ledger."""
    start, _ = month_of(now)
    entries = await repo.costing(conn, owners, start)
    named = owners if owners is not None else list(entries)
    return {owner: cost_this_month(entries.get(owner, []), now) for owner in named}


def reported(costs: dict[str, Fraction]) -> dict[str, Decimal]:
    """Costs as ``quota.usage_changed`` shows them, which the usage rows keep."""
    return {owner: shown(cost) for owner, cost in costs.items()}


def publish_usages(
    uow: BatchUnitOfWork,
    usages: dict[str, Amounts],
    limits: dict[str, Limits],
    costs: dict[str, Fraction],
    last_cause: dict[str, Envelope],
) -> None:
    """One ``quota.usage_changed`` per owner, caused by the last event that moved its usage."""
    for owner, usage_now in usages.items():
        uow.publish(
            usage_event(owner, usage_now, limits.get(owner, Limits()), costs[owner]),
            cause=last_cause[owner],
        )
