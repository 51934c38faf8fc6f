"""SQL over the quota service's own schema."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple

import asyncpg

from services.quota.accounting import HOLDS, Amounts, Entry, Limits, Status
from services.quota.budget import Costed, Spell

_HOLDING = [s.value for s in HOLDS]


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


def _limits(row: Mapping[str, Any]) -> Limits:
    return Limits(row["instances"], row["cpus"], row["memory_mb"], row["cost_per_month"])


async def limits_for(conn: asyncpg.Connection, owners: list[str]) -> dict[str, Limits]:
    rows = await conn.fetch(
        """SELECT owner, instances, cpus, memory_mb, cost_per_month FROM limits
           WHERE owner = ANY($1)""",
        owners,
    )
    return {r["owner"]: _limits(r) for r in rows}


async def set_usages(
    conn: asyncpg.Connection,
    usage: dict[str, Amounts],
    costs: Mapping[str, Decimal],
    at: datetime,
) -> None:
    """Each owner's usage, and the cost this month reported with it (``costs``, at ``at``)."""
    if not usage:
        return
    owners = list(usage)
    await conn.execute(
        """UPDATE usage u SET instances = v.instances, cpus = v.cpus, memory_mb = v.memory_mb,
               cost_reported = v.cost, cost_reported_at = $6
           FROM unnest($1::text[], $2::int[], $3::int[], $4::int[], $5::numeric[])
                AS v(owner, instances, cpus, memory_mb, cost)
           WHERE u.owner = v.owner""",
        owners,
        [usage[o].instances for o in owners],
        [usage[o].cpus for o in owners],
        [usage[o].memory_mb for o in owners],
        [costs[o] for o in owners],
        at,
    )


async def decided_among(conn: asyncpg.Connection, instance_ids: list[uuid.UUID]) -> set[str]:
    rows = await conn.fetch(
        "SELECT instance_id FROM ledger WHERE instance_id = ANY($1::uuid[])", instance_ids
    )
    return {str(r["instance_id"]) for r in rows}


class _LedgerRow(NamedTuple):
    """A new ledger entry's columns, in the order record_many inserts them."""

    instance_id: uuid.UUID
    owner: str
    cpus: int
    memory_mb: int
    status: str
    price_per_hour: Decimal | None
    expires_at: datetime | None
    awaiting_approval: bool
    launch: str | None
    deployment_id: uuid.UUID | None


def _ledger_row(entry: Entry, launch: dict[str, Any] | None) -> _LedgerRow:
    return _LedgerRow(
        entry.instance_id,
        entry.owner,
        entry.amounts.cpus,
        entry.amounts.memory_mb,
        entry.status.value,
        entry.price,
        entry.expires_at,
        entry.awaiting,
        _json(launch),
        entry.deployment_id,
    )


async def record_many(
    conn: asyncpg.Connection, entries: list[Entry], kept: Mapping[uuid.UUID, dict[str, Any]]
) -> None:
    """New ledger entries; ``kept``: the launches held for an approval, by instance id."""
    rows = [_ledger_row(e, kept.get(e.instance_id)) for e in entries]
    # One array per column (empty ones when there are no rows), for unnest.
    columns = [[row[i] for row in rows] for i in range(len(_LedgerRow._fields))]
    await conn.execute(
        """INSERT INTO ledger (instance_id, owner, cpus, memory_mb, status, price_per_hour,
                               expires_at, awaiting_approval, launch, deployment_id)
           SELECT * FROM unnest($1::uuid[], $2::text[], $3::int[], $4::int[], $5::text[],
                                $6::numeric[], $7::timestamptz[], $8::bool[], $9::jsonb[],
                                $10::uuid[])""",
        *columns,
    )


def _json(value: dict[str, Any] | None) -> str | None:
    return None if value is None else json.dumps(value)


async def limits_of(conn: asyncpg.Connection, owner: str) -> Limits:
    row = await conn.fetchrow(
        "SELECT instances, cpus, memory_mb, cost_per_month FROM limits WHERE owner = $1", owner
    )
    return _limits(row) if row else Limits()


async def set_limits(conn: asyncpg.Connection, owner: str, limits: Limits) -> None:
    await conn.execute(
        """INSERT INTO limits (owner, instances, cpus, memory_mb, cost_per_month)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (owner) DO UPDATE SET instances = $2, cpus = $3, memory_mb = $4,
               cost_per_month = $5, updated_at = now()""",
        owner,
        limits.instances,
        limits.cpus,
        limits.memory_mb,
        limits.cost_per_month,
    )


async def entries(conn: asyncpg.Connection, instance_ids: list[uuid.UUID]) -> dict[str, Entry]:
    """Ledger entries by instance id, locked in id order."""
    rows = await conn.fetch(
        """SELECT instance_id, owner, status, cpus, memory_mb, price_per_hour, expires_at,
                  awaiting_approval, deployment_id
           FROM ledger WHERE instance_id = ANY($1::uuid[]) ORDER BY instance_id FOR UPDATE""",
        instance_ids,
    )
    return {
        str(r["instance_id"]): Entry(
            r["instance_id"],
            r["owner"],
            Amounts(1, r["cpus"], r["memory_mb"]),
            Status(r["status"]),
            r["price_per_hour"],
            r["expires_at"],
            r["awaiting_approval"],
            r["deployment_id"],
        )
        for r in rows
    }


async def update_entries(conn: asyncpg.Connection, changed: list[Entry]) -> None:
    """Write entries' status, price, lease end and approval flag; an entry no longer awaiting
    approval lets its kept launch go."""
    if not changed:
        return
    await conn.execute(
        """UPDATE ledger l SET status = v.status, price_per_hour = v.price,
               expires_at = v.expires_at, awaiting_approval = v.awaiting,
               launch = CASE WHEN v.awaiting THEN l.launch END, updated_at = now()
           FROM unnest($1::uuid[], $2::text[], $3::numeric[], $4::timestamptz[], $5::bool[])
                AS v(instance_id, status, price, expires_at, awaiting)
           WHERE l.instance_id = v.instance_id""",
        [e.instance_id for e in changed],
        [e.status.value for e in changed],
        [e.price for e in changed],
        [e.expires_at for e in changed],
        [e.awaiting for e in changed],
    )


async def kept_launches(
    conn: asyncpg.Connection, instance_ids: list[uuid.UUID]
) -> dict[str, dict[str, Any]]:
    """The launches kept for an approval among ``instance_ids`` (their entries must be locked
    already), by instance id."""
    rows = await conn.fetch(
        """SELECT instance_id, launch FROM ledger
           WHERE instance_id = ANY($1::uuid[]) AND awaiting_approval AND launch IS NOT NULL""",
        instance_ids,
    )
    return {str(r["instance_id"]): json.loads(r["launch"]) for r in rows}


async def costing(
    conn: asyncpg.Connection, owners: list[str] | None, since: datetime
) -> dict[str, list[Costed]]:
    """What the budget needs of ``owners``' entries (None: everyone's): those with a price that
    hold, or ran after ``since`` (the month's start), with their spells since then."""
    whose = "" if owners is None else "l.owner = ANY($2::text[]) AND"
    rows = await conn.fetch(
        f"""SELECT l.owner, l.status, l.price_per_hour, l.expires_at,
                   array_agg(s.started_at ORDER BY s.started_at)
                       FILTER (WHERE s.started_at IS NOT NULL) AS starts,
                   array_agg(s.ended_at ORDER BY s.started_at)
                       FILTER (WHERE s.started_at IS NOT NULL) AS ends
            FROM ledger l
            LEFT JOIN spells s ON s.instance_id = l.instance_id
                              AND (s.ended_at IS NULL OR s.ended_at > $1)
            WHERE {whose} l.price_per_hour IS NOT NULL
              AND (l.status IN ('reserved', 'active') OR l.spent_until > $1)
            GROUP BY l.instance_id""",
        since,
        *([] if owners is None else [owners]),
    )
    found: dict[str, list[Costed]] = {}
    for r in rows:
        spells = tuple(map(Spell, r["starts"] or (), r["ends"] or ()))
        found.setdefault(r["owner"], []).append(
            Costed(r["price_per_hour"], r["status"] in _HOLDING, r["expires_at"], spells)
        )
    return found


async def latest_spells(
    conn: asyncpg.Connection, instance_ids: list[uuid.UUID]
) -> dict[str, Spell]:
    """Each instance's latest spell (their entries must be locked already)."""
    rows = await conn.fetch(
        """SELECT DISTINCT ON (instance_id) instance_id, started_at, ended_at FROM spells
           WHERE instance_id = ANY($1::uuid[]) ORDER BY instance_id, started_at DESC""",
        instance_ids,
    )
    return {str(r["instance_id"]): Spell(r["started_at"], r["ended_at"]) for r in rows}


async def write_spells(conn: asyncpg.Connection, spells: list[tuple[uuid.UUID, Spell]]) -> None:
    """Record spells by their start (a spell already there keeps its end unless it was open),
    and each entry's ``spent_until`` from its latest one."""
    if not spells:
        return
    await conn.execute(
        """INSERT INTO spells (instance_id, started_at, ended_at)
           SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::timestamptz[])
           ON CONFLICT (instance_id, started_at) DO UPDATE SET ended_at = EXCLUDED.ended_at
               WHERE spells.ended_at IS NULL""",
        [i for i, _ in spells],
        [s.started_at for _, s in spells],
        [s.ended_at for _, s in spells],
    )
    await conn.execute(
        """UPDATE ledger l SET spent_until = latest.until
           FROM (SELECT DISTINCT ON (instance_id) instance_id,
                        coalesce(ended_at, 'infinity') AS until
                 FROM spells WHERE instance_id = ANY($1::uuid[])
                 ORDER BY instance_id, started_at DESC) AS latest
           WHERE l.instance_id = latest.instance_id""",
        list({i for i, _ in spells}),
    )


async def reported_costs(
    conn: asyncpg.Connection, owners: list[str] | None
) -> dict[str, tuple[Decimal, datetime | None]]:
    """Owners' (None: everyone's) cost this month as last reported, and when."""
    rows = await conn.fetch(
        """SELECT owner, cost_reported, cost_reported_at FROM usage
           WHERE $1::text[] IS NULL OR owner = ANY($1)""",
        owners,
    )
    return {r["owner"]: (r["cost_reported"], r["cost_reported_at"]) for r in rows}


async def set_owner(conn: asyncpg.Connection, instance_id: uuid.UUID, owner: str) -> None:
    await conn.execute(
        "UPDATE ledger SET owner = $2, updated_at = now() WHERE instance_id = $1",
        instance_id,
        owner,
    )


@dataclass(frozen=True)
class Drift:
    """An owner whose usage differs from what their ledger holds."""

    owner: str
    usage: Amounts
    held: Amounts


async def drift(conn: asyncpg.Connection, owners: list[str] | None = None) -> list[Drift]:
    """Owners (among ``owners``; None: all) whose usage differs from what their ledger holds,
    with both. Locks nothing: lock the owners' usage, then ask again."""
    rows = await conn.fetch(
        """WITH held AS (
               SELECT owner, count(*) AS instances, sum(cpus) AS cpus, sum(memory_mb) AS memory_mb
               FROM ledger WHERE status IN ('reserved', 'active') GROUP BY owner)
           SELECT u.owner, u.instances, u.cpus, u.memory_mb,
                  coalesce(h.instances, 0) AS held_instances, coalesce(h.cpus, 0) AS held_cpus,
                  coalesce(h.memory_mb, 0) AS held_memory_mb
           FROM usage u LEFT JOIN held h ON h.owner = u.owner
           WHERE ($1::text[] IS NULL OR u.owner = ANY($1))
             AND (u.instances, u.cpus, u.memory_mb)
                 IS DISTINCT FROM (coalesce(h.instances, 0), coalesce(h.cpus, 0),
                                   coalesce(h.memory_mb, 0))
           ORDER BY u.owner""",
        owners,
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
