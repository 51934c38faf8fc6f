"""SQL over the quota service's own schema."""

from __future__ import annotations

import uuid

import asyncpg

from services.quota.accounting import Amounts, Limits, Status


async def lock_usage(conn: asyncpg.Connection, owner: str) -> Amounts:
    """The owner's usage, locked until the transaction ends: launches of one owner are decided
    one after the other, whichever replica handles them."""
    await conn.execute("INSERT INTO usage (owner) VALUES ($1) ON CONFLICT DO NOTHING", owner)
    row = await conn.fetchrow(
        "SELECT instances, cpus, memory_mb FROM usage WHERE owner = $1 FOR UPDATE", owner
    )
    return Amounts(row["instances"], row["cpus"], row["memory_mb"])


async def add_usage(conn: asyncpg.Connection, owner: str, delta: Amounts) -> Amounts:
    row = await conn.fetchrow(
        """UPDATE usage SET instances = instances + $2, cpus = cpus + $3,
               memory_mb = memory_mb + $4
           WHERE owner = $1 RETURNING instances, cpus, memory_mb""",
        owner,
        delta.instances,
        delta.cpus,
        delta.memory_mb,
    )
    return Amounts(row["instances"], row["cpus"], row["memory_mb"])


async def limits_of(conn: asyncpg.Connection, owner: str) -> Limits:
    row = await conn.fetchrow(
        "SELECT instances, cpus, memory_mb FROM limits WHERE owner = $1", owner
    )
    return Limits(**dict(row)) if row else Limits()


async def set_limits(conn: asyncpg.Connection, owner: str, limits: Limits) -> None:
    await conn.execute(
        """INSERT INTO limits (owner, instances, cpus, memory_mb) VALUES ($1, $2, $3, $4)
           ON CONFLICT (owner) DO UPDATE SET instances = $2, cpus = $3, memory_mb = $4,
               updated_at = now()""",
        owner,
        limits.instances,
        limits.cpus,
        limits.memory_mb,
    )


async def entry(
    conn: asyncpg.Connection, instance_id: uuid.UUID
) -> tuple[str, Status, Amounts] | None:
    row = await conn.fetchrow(
        "SELECT owner, status, cpus, memory_mb FROM ledger WHERE instance_id = $1 FOR UPDATE",
        instance_id,
    )
    if row is None:
        return None
    return row["owner"], Status(row["status"]), Amounts(1, row["cpus"], row["memory_mb"])


async def record(
    conn: asyncpg.Connection,
    instance_id: uuid.UUID,
    owner: str,
    amounts: Amounts,
    status: Status,
) -> None:
    await conn.execute(
        """INSERT INTO ledger (instance_id, owner, cpus, memory_mb, status)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (instance_id) DO UPDATE SET status = $5, updated_at = now()""",
        instance_id,
        owner,
        amounts.cpus,
        amounts.memory_mb,
        status.value,
    )


async def drift(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Owners whose usage differs from what their ledger holds, with both."""
    return await conn.fetch(
        """WITH held AS (
               SELECT owner, count(*) AS instances, sum(cpus) AS cpus, sum(memory_mb) AS memory_mb
               FROM ledger WHERE status IN ('reserved', 'active') GROUP BY owner)
           SELECT u.owner, u.instances, u.cpus, u.memory_mb,
                  coalesce(h.instances, 0) AS held_instances, coalesce(h.cpus, 0) AS held_cpus,
                  coalesce(h.memory_mb, 0) AS held_memory_mb
           FROM usage u LEFT JOIN held h ON h.owner = u.owner
           WHERE (u.instances, u.cpus, u.memory_mb)
                 IS DISTINCT FROM (coalesce(h.instances, 0), coalesce(h.cpus, 0),
                                   coalesce(h.memory_mb, 0))
           FOR UPDATE OF u"""
    )


async def overwrite_usage(conn: asyncpg.Connection, owner: str, usage: Amounts) -> None:
    await conn.execute(
        "UPDATE usage SET instances = $2, cpus = $3, memory_mb = $4 WHERE owner = $1",
        owner,
        usage.instances,
        usage.cpus,
        usage.memory_mb,
    )
