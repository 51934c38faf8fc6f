"""Drift repair: usage recomputed from the ledger, corrected and reported where they differ."""

from __future__ import annotations

from typing import NoReturn

import asyncpg
import structlog

from services.quota import SOURCE, repository
from services.quota.handlers import usage_event
from shared.loops import every
from shared.outbox import add_to_outbox

log = structlog.get_logger(__name__)


async def reconcile_once(pool: asyncpg.Pool, source: str = SOURCE) -> int:
    """Correct every drifted owner; returns how many were corrected."""
    async with pool.acquire() as conn, conn.transaction():
        drifted = await repository.drift(conn)
        for d in drifted:
            await repository.overwrite_usage(conn, d.owner, d.held)
            limits = await repository.limits_of(conn, d.owner)
            await add_to_outbox(conn, usage_event(d.owner, d.held, limits), source=source)
            log.warning("quota_drift_repaired", owner=d.owner, was=vars(d.usage), now=vars(d.held))
    return len(drifted)


async def reconcile_forever(pool: asyncpg.Pool, interval: float) -> NoReturn:
    async def step() -> None:
        await reconcile_once(pool)

    await every(interval, step, name="drift_repair", log=log, event="reconcile_skipped")
