"""Reconciliation: usage recomputed from the ledger, corrected and reported where they differ;
and an owner's cost this month reported again when it moved since it was last reported (by a
cent or more, or into a new month: at the month's rollover, UTC, what was spent is left behind
and what the instances held commit to the new month)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from typing import NoReturn

import asyncpg
import structlog

from services.quota import SOURCE, repository
from services.quota.accounting import Limits
from services.quota.budget import cost_moved
from services.quota.reporting import costs_at, reported, usage_event
from shared.loops import every
from shared.outbox import add_to_outbox
from shared.runtime import Clock, utcnow

log = structlog.get_logger(__name__)


async def reconcile_once(pool: asyncpg.Pool, source: str = SOURCE, *, clock: Clock = utcnow) -> int:
    """Correct every drifted owner and report every owner whose cost moved; returns how many
    owners were reported. The candidates are found first, then their usage rows locked (in
    owner order, as a batch of decisions locks them) and everything asked again."""
    async with pool.acquire() as conn, conn.transaction():
        now = clock()
        owners = await _candidates(conn, now)
        if not owners:
            return 0
        usage = await repository.lock_usages(conn, owners)
        drifted = {d.owner: d for d in await repository.drift(conn, owners)}
        costs = await costs_at(conn, owners, now)
        was = await repository.reported_costs(conn, owners)
        due = [
            o
            for o in owners
            if o in drifted or cost_moved(*was.get(o, (Decimal(0), None)), costs[o], now)
        ]
        after = {o: drifted[o].held if o in drifted else usage[o] for o in due}
        await repository.set_usages(conn, after, reported(costs), now)
        limits = await repository.limits_for(conn, due)
        for owner in due:
            event = usage_event(owner, after[owner], limits.get(owner, Limits()), costs[owner])
            await add_to_outbox(conn, event, source=source)
            if owner in drifted:
                d = drifted[owner]
                log.warning(
                    "quota_drift_repaired", owner=owner, was=vars(d.usage), now=vars(d.held)
                )
            else:
                log.info("quota_cost_reported", owner=owner, cost=event.usage.cost_this_month)
    return len(due)


async def _candidates(conn: asyncpg.Connection, now: datetime) -> list[str]:
    """Owners drifted or whose cost moved, as seen without locks."""
    drifted = {d.owner for d in await repository.drift(conn)}
    costs = await costs_at(conn, None, now)
    moved = {
        owner
        for owner, (cost, at) in (await repository.reported_costs(conn, None)).items()
        if cost_moved(cost, at, costs.get(owner, Fraction(0)), now)
    }
    return sorted(drifted | moved)


async def reconcile_forever(pool: asyncpg.Pool, interval: float, clock: Clock = utcnow) -> NoReturn:
    async def step() -> None:
        await reconcile_once(pool, clock=clock)

    await every(interval, step, name="drift_repair", log=log, event="reconcile_skipped")
