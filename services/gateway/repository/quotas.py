"""Limits and usage as the gateway last heard them, and running spells for chargeback."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

import asyncpg

from services.gateway.chargeback import RunningSeconds
from services.gateway.schemas import Quota

UNLIMITED: dict[str, int | float | None] = {
    "instances": None,
    "cpus": None,
    "memory_mb": None,
    "cost_per_month": None,
}
NOTHING: dict[str, int | float | None] = {
    "instances": 0,
    "cpus": 0,
    "memory_mb": 0,
    "cost_this_month": 0.0,
}


async def view(conn: asyncpg.Connection | asyncpg.Pool, owner: str) -> Quota:
    """Limits and usage as last heard; a figure not heard of yet (a row from before budgets)
    shows as none set and nothing used."""
    row = await conn.fetchrow("SELECT limits, usage FROM quotas WHERE owner = $1", owner)
    if row is None:
        return Quota(limits=UNLIMITED, usage=NOTHING)
    return Quota(
        limits={**UNLIMITED, **json.loads(row["limits"])},
        usage={**NOTHING, **json.loads(row["usage"])},
    )


async def set_limits(conn: asyncpg.Connection, owner: str, limits: dict[str, Any]) -> None:
    await conn.execute(
        """INSERT INTO quotas (owner, limits) VALUES ($1, $2)
           ON CONFLICT (owner) DO UPDATE SET limits = $2, updated_at = now()""",
        owner,
        json.dumps(limits),
    )


async def record_usage(
    conn: asyncpg.Connection, owner: str, usage: dict[str, Any], limits: dict[str, Any]
) -> None:
    await conn.execute(
        """INSERT INTO quotas (owner, limits, usage) VALUES ($1, $2, $3)
           ON CONFLICT (owner) DO UPDATE SET limits = $2, usage = $3, updated_at = now()""",
        owner,
        json.dumps(limits),
        json.dumps(usage),
    )


async def start_run(
    conn: asyncpg.Connection,
    *,
    instance_id: uuid.UUID,
    owner: str,
    account_id: str,
    cpus: int,
    memory_mb: int,
    at: datetime,
) -> None:
    await conn.execute(
        """INSERT INTO runs (instance_id, owner, account_id, cpus, memory_mb, started_at)
           SELECT $1, $2, $3, $4, $5, $6
           WHERE NOT EXISTS (SELECT 1 FROM runs WHERE instance_id = $1 AND ended_at IS NULL)
           ON CONFLICT DO NOTHING""",
        instance_id,
        owner,
        account_id,
        cpus,
        memory_mb,
        at,
    )


async def end_run(conn: asyncpg.Connection, instance_id: uuid.UUID, at: datetime) -> None:
    await conn.execute(
        "UPDATE runs SET ended_at = $2 WHERE instance_id = $1 AND ended_at IS NULL", instance_id, at
    )


async def usage_report(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    start: datetime,
    end: datetime,
    now: datetime,
    owner: str | None,
) -> list[RunningSeconds]:
    """Seconds of running time per owner and account within [start, end), weighted three ways,
    and by the instance's placed price."""
    rows = await conn.fetch(
        """WITH clipped AS (
               SELECT r.owner, r.account_id, r.cpus, r.memory_mb,
                      coalesce(i.price_per_hour, 0) AS price,
                      extract(epoch FROM least(coalesce(r.ended_at, $3), $2)
                                         - greatest(r.started_at, $1)) AS seconds
               FROM runs r LEFT JOIN instances i ON i.id = r.instance_id
               WHERE r.started_at < $2 AND coalesce(r.ended_at, $3) > $1
                 AND ($4::text IS NULL OR r.owner = $4))
           SELECT owner, account_id,
                  sum(seconds) AS instance_seconds,
                  sum(seconds * cpus) AS cpu_seconds,
                  sum(seconds * memory_mb) AS memory_mb_seconds,
                  sum(seconds * price) AS price_seconds
           FROM clipped WHERE seconds > 0
           GROUP BY owner, account_id ORDER BY owner, account_id""",
        start,
        end,
        now,
        owner,
    )
    return [
        RunningSeconds(
            owner=row["owner"],
            account_id=row["account_id"],
            instance_seconds=float(row["instance_seconds"]),
            cpu_seconds=float(row["cpu_seconds"]),
            memory_mb_seconds=float(row["memory_mb_seconds"]),
            price_seconds=float(row["price_seconds"]),
        )
        for row in rows
    ]
