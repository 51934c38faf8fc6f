"""Housekeeping: account loads recounted from placements, finished cloud calls and ended leases
pruned."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import asyncpg
import structlog

from services.scheduler import deployment_rows, repository
from shared.runtime import Clock

log = structlog.get_logger(__name__)

INTERVAL = 60.0
KEEP_FINISHED = timedelta(days=7)


async def upkeep_forever(pool: asyncpg.Pool, clock: Clock) -> None:
    while True:
        # A crash between a create's reservation and its release can leave a load one too high.
        if repaired := await repository.repair_loads(pool):
            log.warning("account_loads_repaired", accounts=repaired)
        await repository.prune_calls(pool, clock() - KEEP_FINISHED)
        await repository.prune_leases(pool, clock() - KEEP_FINISHED)
        await deployment_rows.prune_early_answers(pool, clock() - KEEP_FINISHED)
        await asyncio.sleep(INTERVAL)
