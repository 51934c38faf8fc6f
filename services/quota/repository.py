"""SQL over the quota service's own schema."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

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


async def lock_usages(conn: asyncpg.Connection, owners: list[str]) -> dict[str, Amounts]:
    """Several owners' usage, locked until the transaction ends (in owner order, so two
    transactions locking overlapping sets cannot deadlock)."""
    await conn.execute(
        "INSERT INTO usage (owner) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING", owners
    )
    rows = await conn.fetch(
        """SELECT owner, instances, cpus, memory_mb FROM usage WHERE owner = ANY($1)
           ORDER BY owner FOR UPDATE""",
        owners,
    )
    return {r["owner"]: Amounts(r["instances"], r["cpus"], r["memory_mb"]) for r in rows}


async def limits_for(conn: asyncpg.Connection, owners: list[str]) -> dict[str, Limits]:
    rows = await conn.fetch(
        "SELECT owner, instances, cpus, memory_mb FROM limits WHERE owner = ANY($1)", owners
    )
    return {r["owner"]: Limits(r["instances"], r["cpus"], r["memory_mb"]) for r in rows}


async def set_usages(conn: asyncpg.Connection, usage: dict[str, Amounts]) -> None:
    if not usage:
        return
    owners = list(usage)
    await conn.execute(
        """UPDATE usage u SET instances = v.instances, cpus = v.cpus, memory_mb = v.memory_mb
           FROM unnest($1::text[], $2::int[], $3::int[], $4::int[])
                AS v(owner, instances, cpus, memory_mb)
           WHERE u.owner = v.owner""",
        owners,
        [usage[o].instances for o in owners],
        [usage[o].cpus for o in owners],
        [usage[o].memory_mb for o in owners],
    )


async def decided_among(conn: asyncpg.Connection, instance_ids: list[uuid.UUID]) -> set[str]:
    rows = await conn.fetch(
        "SELECT instance_id FROM ledger WHERE instance_id = ANY($1::uuid[])", instance_ids
    )
    return {str(r["instance_id"]) for r in rows}


async def record_many(
    conn: asyncpg.Connection, entries: list[tuple[uuid.UUID, str, Amounts, Status]]
) -> None:
    await conn.execute(
        """INSERT INTO ledger (instance_id, owner, cpus, memory_mb, status)
           SELECT * FROM unnest($1::uuid[], $2::text[], $3::int[], $4::int[], $5::text[])""",
        [e[0] for e in entries],
        [e[1] for e in entries],
        [e[2].cpus for e in entries],
        [e[2].memory_mb for e in entries],
        [e[3].value for e in entries],
    )


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


async def entries(
    conn: asyncpg.Connection, instance_ids: list[uuid.UUID]
) -> dict[str, tuple[str, Status, Amounts]]:
    """Ledger entries by instance id, locked in id order."""
    rows = await conn.fetch(
        """SELECT instance_id, owner, status, cpus, memory_mb FROM ledger
           WHERE instance_id = ANY($1::uuid[]) ORDER BY instance_id FOR UPDATE""",
        instance_ids,
    )
    return {
        str(r["instance_id"]): (
            r["owner"],
            Status(r["status"]),
            Amounts(1, r["cpus"], r["memory_mb"]),
        )
        for r in rows
    }


async def set_owner(conn: asyncpg.Connection, instance_id: uuid.UUID, owner: str) -> None:
    await conn.execute(
        "UPDATE ledger SET owner = $2, updated_at = now() WHERE instance_id = $1",
        instance_id,
        owner,
    )


async def set_statuses(conn: asyncpg.Connection, statuses: dict[str, Status]) -> None:
    if not statuses:
        return
    await conn.execute(
        """UPDATE ledger l SET status = v.status, updated_at = now()
           FROM unnest($1::uuid[], $2::text[]) AS v(instance_id, status)
           WHERE l.instance_id = v.instance_id""",
        list(statuses),
        [s.value for s in statuses.values()],
    )


@dataclass(frozen=True)
class Drift:
    """An owner whose usage differs from what their ledger holds."""

    owner: str
    usage: Amounts
    held: Amounts


async def drift(conn: asyncpg.Connection) -> list[Drift]:
    """Owners whose usage differs from what their ledger holds, with both."""
    rows = await conn.fetch(
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
           ORDER BY u.owner
           FOR UPDATE OF u"""
    )
    return [
        Drift(
            r["owner"],
            Amounts(r["instances"], r["cpus"], r["memory_mb"]),
            Amounts(r["held_instances"], r["held_cpus"], r["held_memory_mb"]),
        )
        for r in rows
    ]


async def overwrite_usage(conn: asyncpg.Connection, owner: str, usage: Amounts) -> None:
    await conn.execute(
        "UPDATE usage SET instances = $2, cpus = $3, memory_mb = $4 WHERE owner = $1",
        owner,
        usage.instances,
        usage.cpus,
        usage.memory_mb,
    )
