"""SQL over the scheduler's own schema."""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg

from shared.events import ProviderAccountChanged


async def upsert_account(conn: asyncpg.Connection, event: ProviderAccountChanged) -> None:
    """Keep the newest revision; an older one arriving late changes nothing."""
    await conn.execute(
        """INSERT INTO accounts (id, name, provider, config, grants, credentials, revision)
           VALUES ($1, $2, $3, $4, $5, $6, $7)
           ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, provider = EXCLUDED.provider,
               config = EXCLUDED.config, grants = EXCLUDED.grants,
               credentials = EXCLUDED.credentials, revision = EXCLUDED.revision
           WHERE accounts.revision < EXCLUDED.revision""",
        event.account_id,
        event.name,
        event.provider,
        json.dumps(event.config),
        event.grants,
        event.credentials.model_dump_json(),
        event.revision,
    )


async def all_accounts(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    rows = await conn.fetch("SELECT * FROM accounts ORDER BY name")
    return [_account(r) for r in rows]


async def account(conn: asyncpg.Connection, account_id: str) -> dict[str, Any] | None:
    row = await conn.fetchrow("SELECT * FROM accounts WHERE id = $1", account_id)
    return _account(row) if row else None


def _account(row: asyncpg.Record) -> dict[str, Any]:
    return {
        **dict(row),
        "config": json.loads(row["config"]),
        "credentials": json.loads(row["credentials"]),
    }


async def load_by_account(conn: asyncpg.Connection) -> dict[str, int]:
    rows = await conn.fetch(
        """SELECT account_id, count(*) AS n FROM placements
           WHERE status = 'placed' GROUP BY account_id"""
    )
    return {r["account_id"]: r["n"] for r in rows}


async def placement(conn: asyncpg.Connection, instance_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM placements WHERE instance_id = $1 FOR UPDATE", instance_id
    )


async def record(
    conn: asyncpg.Connection,
    instance_id: uuid.UUID,
    *,
    owner: str,
    status: str,
    account_id: str | None = None,
    provider_instance_id: str | None = None,
) -> None:
    await conn.execute(
        """INSERT INTO placements (instance_id, owner, status, account_id, provider_instance_id)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (instance_id) DO UPDATE SET status = EXCLUDED.status,
               account_id = coalesce(EXCLUDED.account_id, placements.account_id),
               provider_instance_id = coalesce(EXCLUDED.provider_instance_id,
                                               placements.provider_instance_id),
               updated_at = now()""",
        instance_id,
        owner,
        status,
        account_id,
        provider_instance_id,
    )
