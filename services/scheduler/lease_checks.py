"""The lease loop: every ``BOREAS_LEASE_CHECK_INTERVAL`` it takes the leases whose time has come
and, in one transaction, publishes what each calls for (:mod:`services.scheduler.leases`) and
moves it on.

Everything is in the database (``leases``), so a restart loses nothing: a warning or an expiry
due while no scheduler ran goes out at the next check. The rows are taken ``FOR UPDATE SKIP
LOCKED``, so replicas share them and none is warned or ended twice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NoReturn

import asyncpg
import structlog

from services.scheduler import SOURCE, repository
from services.scheduler.leases import lease_events, lease_step
from shared.events import Envelope
from shared.loops import every
from shared.outbox import add_envelopes
from shared.runtime import Clock

log = structlog.get_logger(__name__)

BATCH = 100


async def check_leases(pool: asyncpg.Pool, clock: Clock, on_commit: Callable[[], None]) -> int:
    """Warn about and end the leases due now; how many were taken."""
    now = clock()
    async with pool.acquire() as conn, conn.transaction():
        due = await repository.claim_due_leases(conn, now, BATCH)
        envelopes: list[Envelope] = []
        for lease in due:
            step = lease_step(lease, now)
            envelopes += [
                Envelope.wrap(e, source=SOURCE, time=now) for e in lease_events(lease, step)
            ]
            await repository.move_lease(
                conn, lease.instance_id, warned=step.warned, due_at=step.due_at
            )
            if step.warn or step.expire:
                log.info(
                    "lease_expired" if step.expire else "lease_expiring",
                    instance_id=str(lease.instance_id),
                    expires_at=lease.expires_at.isoformat(),
                    on_expiry=lease.on_expiry,
                    action=step.action.value if step.action else None,
                )
        await add_envelopes(conn, envelopes)
    if due:
        on_commit()
    return len(due)


async def check_leases_forever(
    pool: asyncpg.Pool, clock: Clock, interval: float, on_commit: Callable[[], None]
) -> NoReturn:
    async def step() -> float | None:
        taken = await check_leases(pool, clock, on_commit)
        return 0.0 if taken == BATCH else None  # more may be due: at once

    await every(interval, step, name="lease_checks", log=log)
