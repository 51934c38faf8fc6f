"""Service replicas heard through their heartbeats."""

from __future__ import annotations

from datetime import datetime

import asyncpg


async def record_replica_seen(
    conn: asyncpg.Connection,
    *,
    service: str,
    replica: str,
    started_at: datetime,
    sent_at: datetime,
    seen_at: datetime,
) -> None:
    # GREATEST keeps this idempotent and order-insensitive, so heartbeats need no inbox.
    await conn.execute(
        """INSERT INTO service_replicas (service, replica, started_at, sent_at, last_seen)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (service, replica) DO UPDATE SET
               started_at = EXCLUDED.started_at,
               sent_at = GREATEST(service_replicas.sent_at, EXCLUDED.sent_at),
               last_seen = GREATEST(service_replicas.last_seen, EXCLUDED.last_seen)""",
        service,
        replica,
        started_at,
        sent_at,
        seen_at,
    )


async def last_seen_by_service(
    conn: asyncpg.Connection | asyncpg.Pool, *, alive_since: datetime
) -> dict[str, tuple[datetime, int]]:
    """service → (latest heartbeat, number of replicas heard from since ``alive_since``)."""
    rows = await conn.fetch(
        """SELECT service, max(last_seen) AS last_seen,
                  count(*) FILTER (WHERE last_seen >= $1) AS alive_replicas
           FROM service_replicas GROUP BY service""",
        alive_since,
    )
    return {r["service"]: (r["last_seen"], r["alive_replicas"]) for r in rows}
