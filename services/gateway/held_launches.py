"""Launches held for approval: approving, denying (an admin, the owner withdrawing, or the
timeout), each under the instance's row lock, published through the outbox and audited."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import NoReturn

import asyncpg
import structlog

from services.gateway.approvals import spoken_duration
from services.gateway.repository import approvals, audit, instances
from services.gateway.schemas import InstanceOut
from shared.events import InstanceApproved, InstanceDenied, InstanceState
from shared.loops import every
from shared.outbox import OutboxRelay, add_to_outbox

log = structlog.get_logger(__name__)

# Who decides when nobody answered in time.
TIMEOUT_ACTOR = "boreas"
# How often the gateway looks for unanswered approvals, and how many it denies per transaction.
CHECK_INTERVAL = 1.0
BATCH = 100


async def approve(
    conn: asyncpg.Connection,
    held: InstanceOut,
    *,
    decided_by: str,
    comment: str | None,
    now: datetime,
    source: str,
) -> InstanceOut:
    """Approve ``held`` (locked, awaiting approval): quota sends it on to placement."""
    await instances.set_state(conn, held.id, InstanceState.REQUESTED.value, now)
    await add_to_outbox(
        conn,
        InstanceApproved(
            instance_id=held.id,
            owner=held.owner,
            decided_by=decided_by,
            comment=comment,
            decided_at=now,
        ),
        source=source,
    )
    await audit.record(
        conn,
        actor=decided_by,
        action="instance_approved",
        target=str(held.id),
        detail={"comment": comment},
    )
    return held.model_copy(update={"state": InstanceState.REQUESTED.value, "updated_at": now})


async def deny(
    conn: asyncpg.Connection,
    held: InstanceOut,
    *,
    decided_by: str,
    comment: str | None,
    reason: str,
    now: datetime,
    source: str,
) -> InstanceOut:
    """Deny ``held`` (locked, awaiting approval): it ends ``denied`` and quota releases its
    reservation."""
    await instances.apply_update(
        conn, held.id, now=now, state=InstanceState.DENIED.value, reason=reason
    )
    await add_to_outbox(
        conn,
        InstanceDenied(
            instance_id=held.id,
            owner=held.owner,
            decided_by=decided_by,
            comment=comment,
            decided_at=now,
            reason=reason,
        ),
        source=source,
    )
    await audit.record(
        conn,
        actor=decided_by,
        action="instance_denied",
        target=str(held.id),
        detail={"comment": comment, "reason": reason},
    )
    return held.model_copy(
        update={"state": InstanceState.DENIED.value, "reason": reason, "updated_at": now}
    )


def denial_reason(decided_by: str, comment: str | None) -> str:
    return f"denied by {decided_by}: {comment}" if comment else f"denied by {decided_by}"


async def deny_overdue(
    pool: asyncpg.Pool, outbox: OutboxRelay, *, now: datetime, timeout: float, source: str
) -> int:
    """Deny up to BATCH held launches past their deadline, in one transaction; how many."""
    reason = f"no answer within {spoken_duration(timeout)}"
    async with pool.acquire() as conn, outbox.transaction(conn):
        overdue = await approvals.claim_overdue(conn, now, BATCH)
        for instance_id in overdue:
            held = await instances.visible_instance(
                conn, instance_id, viewer=TIMEOUT_ACTOR, everything=True
            )
            if held is None:  # cannot be: the claim holds its row
                continue
            await deny(
                conn,
                held,
                decided_by=TIMEOUT_ACTOR,
                comment=None,
                reason=reason,
                now=now,
                source=source,
            )
    if overdue:
        log.info("approvals_timed_out", count=len(overdue), reason=reason)
    return len(overdue)


async def deny_overdue_forever(
    pool: asyncpg.Pool,
    outbox: OutboxRelay,
    clock: Callable[[], datetime],
    *,
    timeout: float,
    source: str,
) -> NoReturn:
    async def step() -> float | None:
        denied = await deny_overdue(pool, outbox, now=clock(), timeout=timeout, source=source)
        return 0.0 if denied == BATCH else None  # more may be waiting: go on at once

    await every(CHECK_INTERVAL, step, name="approval_timeouts", log=log)
