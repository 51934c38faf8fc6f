"""SQL over the poller's own schema."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from shared.events import InstancePlaced, ProviderAccountChanged


async def upsert_account(conn: asyncpg.Connection, event: ProviderAccountChanged) -> None:
    await conn.execute(
        """INSERT INTO accounts (id, name, provider, config, credentials, revision)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, provider = EXCLUDED.provider,
               config = EXCLUDED.config, credentials = EXCLUDED.credentials,
               revision = EXCLUDED.revision
           WHERE accounts.revision < EXCLUDED.revision""",
        event.account_id,
        event.name,
        event.provider,
        json.dumps(event.config),
        event.credentials.model_dump_json(),
        event.revision,
    )


async def follow(conn: asyncpg.Connection, event: InstancePlaced) -> None:
    await conn.execute(
        """INSERT INTO instances (instance_id, owner, account_id, provider, provider_instance_id,
                                  cpus, memory_mb, state)
           VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending') ON CONFLICT DO NOTHING""",
        event.instance_id,
        event.owner,
        event.account_id,
        event.provider,
        event.provider_instance_id,
        event.cpus or 0,
        event.memory_mb or 0,
    )


async def claim_due_accounts(
    conn: asyncpg.Connection, *, now: datetime, default_interval: float, limit: int
) -> list[dict[str, Any]]:
    """Take the accounts due now and move each one's next poll an interval ahead, atomically.

    Replicas run this concurrently: ``SKIP LOCKED`` hands each due account to exactly one of
    them, and the moved ``next_poll_at`` keeps it from being claimed again within the interval.
    A replica that dies after claiming simply misses one poll: the account is due again one
    interval later, for whichever replica is alive.
    """
    rows = await conn.fetch(
        """UPDATE accounts a SET next_poll_at = $1 + make_interval(
               secs => coalesce((a.config->>'poll_interval')::float8, $2))
           WHERE a.id IN (SELECT id FROM accounts WHERE next_poll_at <= $1
                          ORDER BY next_poll_at LIMIT $3 FOR UPDATE SKIP LOCKED)
           RETURNING a.*""",
        now,
        default_interval,
        limit,
    )
    return [
        {**dict(r), "config": json.loads(r["config"]), "credentials": json.loads(r["credentials"])}
        for r in rows
    ]


async def back_off(
    conn: asyncpg.Connection, account_id: str, *, until: datetime, error: str
) -> int:
    return await conn.fetchval(
        """UPDATE accounts SET failures = failures + 1, next_poll_at = $2, last_error = $3
           WHERE id = $1 RETURNING failures""",
        account_id,
        until,
        error,
    )


async def failures(conn: asyncpg.Connection | asyncpg.Pool, account_id: str) -> int:
    return await conn.fetchval("SELECT failures FROM accounts WHERE id = $1", account_id) or 0


async def clear_failures(conn: asyncpg.Connection, account_id: str) -> None:
    await conn.execute(
        "UPDATE accounts SET failures = 0, last_error = NULL WHERE id = $1 AND failures > 0",
        account_id,
    )


async def followed(conn: asyncpg.Connection, account_id: str) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT * FROM instances WHERE account_id = $1 FOR UPDATE", account_id)


async def set_state(
    conn: asyncpg.Connection, instance_id: object, state: str, observed_at: datetime
) -> None:
    await conn.execute(
        "UPDATE instances SET state = $2, observed_at = $3 WHERE instance_id = $1",
        instance_id,
        state,
        observed_at,
    )


async def newly_unmanaged(
    conn: asyncpg.Connection, account_id: str, provider_ids: list[str], now: datetime
) -> list[str]:
    rows = await conn.fetch(
        """INSERT INTO unmanaged_nodes (account_id, provider_instance_id, first_seen)
           SELECT $1, unnest($2::text[]), $3 ON CONFLICT DO NOTHING
           RETURNING provider_instance_id""",
        account_id,
        provider_ids,
        now,
    )
    return [r["provider_instance_id"] for r in rows]


async def log_poll(
    conn: asyncpg.Connection, account_id: str, replica: str, at: datetime, ok: bool
) -> None:
    await conn.execute(
        "INSERT INTO polls (account_id, replica, at, ok) VALUES ($1, $2, $3, $4)",
        account_id,
        replica,
        at,
        ok,
    )


async def prune_polls(conn: asyncpg.Connection | asyncpg.Pool, now: datetime) -> None:
    await conn.execute("DELETE FROM polls WHERE at < $1", now - timedelta(days=1))
