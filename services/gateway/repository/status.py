"""Service replicas heard through their heartbeats."""

from __future__ import annotations

from dataclasses import dataclass
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
    failing: list[str],
) -> None:
    # GREATEST keeps this idempotent and order-insensitive, so heartbeats need no inbox.
    await conn.execute(
        """INSERT INTO service_replicas (service, replica, started_at, sent_at, last_seen, failing)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (service, replica) DO UPDATE SET
               started_at = EXCLUDED.started_at,
               failing = CASE WHEN EXCLUDED.sent_at >= service_replicas.sent_at
                              THEN EXCLUDED.failing ELSE service_replicas.failing END,
               sent_at = GREATEST(service_replicas.sent_at, EXCLUDED.sent_at),
               last_seen = GREATEST(service_replicas.last_seen, EXCLUDED.last_seen)""",
        service,
        replica,
        started_at,
        sent_at,
        seen_at,
        failing,
    )


@dataclass(frozen=True)
class ServiceSeen:
    last_seen: datetime
    alive_replicas: int  # heard from recently, every background loop up
    failing: list[str]  # loops down in replicas heard from recently


async def last_seen_by_service(
    conn: asyncpg.Connection | asyncpg.Pool, *, alive_since: datetime
) -> dict[str, ServiceSeen]:
    rows = await conn.fetch(
        """SELECT service, max(last_seen) AS last_seen,
                  count(*) FILTER (WHERE last_seen >= $1 AND failing = '{}') AS alive_replicas,
                  array(SELECT DISTINCT unnest(array_agg(r.failing_one))) AS failing
           FROM service_replicas s
           LEFT JOIN LATERAL (SELECT unnest(s.failing) AS failing_one WHERE s.last_seen >= $1) r
                ON true
           GROUP BY service""",
        alive_since,
    )
    return {
        r["service"]: ServiceSeen(
            r["last_seen"], r["alive_replicas"], sorted(f for f in r["failing"] if f)
        )
        for r in rows
    }
