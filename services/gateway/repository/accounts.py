"""Provider accounts and who may launch on them. Sealed credentials stay in this module's rows."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import asyncpg

from services.gateway.repository import catalogs
from services.gateway.schemas import AccountHealth, ProviderAccountOut
from shared.events import ProviderAccountHealth, SealedSecret

# Every column but the sealed credentials, and who the account is granted to: what routes may read.
_PUBLIC = """SELECT a.id, a.name, a.provider, a.config, a.revision, a.created_at, a.updated_at,
                    coalesce(array_agg(g.grantee ORDER BY g.grantee)
                             FILTER (WHERE g.grantee IS NOT NULL), '{}') AS grants
             FROM provider_accounts a LEFT JOIN account_grants g ON g.account_id = a.id"""


async def create_account(
    conn: asyncpg.Connection,
    *,
    account_id: str,
    name: str,
    provider: str,
    config: dict[str, Any],
    sealed: SealedSecret,
) -> bool:
    """False when the name is taken."""
    status = await conn.execute(
        """INSERT INTO provider_accounts (id, name, provider, config, credentials)
           VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING""",
        account_id,
        name,
        provider,
        json.dumps(config),
        sealed.model_dump_json(),
    )
    return status.endswith(" 1")


async def replace_grants(conn: asyncpg.Connection, account_id: str, grantees: list[str]) -> None:
    await conn.execute("DELETE FROM account_grants WHERE account_id = $1", account_id)
    await conn.executemany(
        "INSERT INTO account_grants (account_id, grantee) VALUES ($1, $2)",
        [(account_id, g) for g in sorted(set(grantees))],
    )


async def ungrant_everywhere(conn: asyncpg.Connection, grantee: str) -> list[str]:
    """Remove ``grantee`` from every account's grants; the accounts that had it."""
    rows = await conn.fetch(
        "DELETE FROM account_grants WHERE grantee = $1 RETURNING account_id", grantee
    )
    return sorted(r["account_id"] for r in rows)


async def bump_revision(conn: asyncpg.Connection, account_id: str) -> None:
    await conn.execute(
        "UPDATE provider_accounts SET revision = revision + 1, updated_at = now() WHERE id = $1",
        account_id,
    )


async def lock_account(conn: asyncpg.Connection, account_id: str) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT true FROM provider_accounts WHERE id = $1 FOR UPDATE", account_id
        )
    )


async def account_with_grants(
    conn: asyncpg.Connection | asyncpg.Pool, account_id: str
) -> ProviderAccountOut | None:
    row = await conn.fetchrow(f"{_PUBLIC} WHERE a.id = $1 GROUP BY a.id", account_id)
    return _public(row) if row else None


async def sealed_credentials(conn: asyncpg.Connection, account_id: str) -> SealedSecret:
    raw = await conn.fetchval("SELECT credentials FROM provider_accounts WHERE id = $1", account_id)
    return SealedSecret.model_validate_json(raw)


async def visible_accounts(
    conn: asyncpg.Connection | asyncpg.Pool, *, username: str, everything: bool
) -> list[ProviderAccountOut]:
    """Accounts granted to ``username`` (directly or through '*'); all with ``everything``."""
    rows = await conn.fetch(
        f"""{_PUBLIC} GROUP BY a.id
            HAVING $2 OR bool_or(g.grantee = $1 OR g.grantee = '*')
            ORDER BY a.name""",
        username,
        everything,
    )
    return [_public(r) for r in rows]


async def placement_possible(
    conn: asyncpg.Connection,
    *,
    username: str,
    provider: str | None,
    account: str | None,
    region: str | None,
) -> bool:
    """Whether some account granted to ``username`` fits the placement: the question every
    launch asks, answered by an index lookup rather than by reading every account (the same
    rules as ``placement_check``, which says *why* when this is false)."""
    return await conn.fetchval(
        f"SELECT EXISTS (SELECT 1 {catalogs.FITTING})", username, provider, account, region
    )


def _public(row: asyncpg.Record) -> ProviderAccountOut:
    return ProviderAccountOut(**{**row, "config": json.loads(row["config"])})


async def all_account_ids(conn: asyncpg.Connection) -> list[str]:
    return [r["id"] for r in await conn.fetch("SELECT id FROM provider_accounts ORDER BY id")]


async def replace_credentials(
    conn: asyncpg.Connection, account_id: str, sealed: SealedSecret
) -> None:
    await conn.execute(
        """UPDATE provider_accounts SET credentials = $2, revision = revision + 1,
               updated_at = now() WHERE id = $1""",
        account_id,
        sealed.model_dump_json(),
    )


async def record_health(
    conn: asyncpg.Connection, report: ProviderAccountHealth, *, reported_at: datetime
) -> None:
    """Keep the report unless one about a later poll is kept already (or the account is gone)."""
    await conn.execute(
        """INSERT INTO account_health
               (account_id, last_poll_at, last_error, consecutive_failures, reported_at)
           SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM provider_accounts WHERE id = $1)
           ON CONFLICT (account_id) DO UPDATE SET
               last_poll_at = excluded.last_poll_at, last_error = excluded.last_error,
               consecutive_failures = excluded.consecutive_failures,
               reported_at = excluded.reported_at
           WHERE account_health.last_poll_at IS NULL
              OR excluded.last_poll_at >= account_health.last_poll_at""",
        report.account_id,
        report.last_poll_at,
        report.last_error,
        report.consecutive_failures,
        reported_at,
    )


async def health_of(conn: asyncpg.Connection, account_id: str) -> AccountHealth:
    """The poller's last report; before the first, no poll and no failure."""
    row = await conn.fetchrow(
        """SELECT last_poll_at, last_error, consecutive_failures FROM account_health
           WHERE account_id = $1""",
        account_id,
    )
    if row is None:
        return AccountHealth(last_poll_at=None, last_error=None, consecutive_failures=0)
    return AccountHealth(**row)


async def update_account(
    conn: asyncpg.Connection,
    account_id: str,
    *,
    name: str | None,
    config: dict[str, Any] | None,
    sealed: SealedSecret | None,
) -> bool:
    """Change what is given (None: keep) and count a revision; False when the name is taken."""
    try:
        async with conn.transaction():  # a savepoint: a taken name leaves the caller's intact
            await conn.execute(
                """UPDATE provider_accounts SET name = coalesce($2, name),
                       config = coalesce($3::jsonb, config),
                       credentials = coalesce($4::jsonb, credentials),
                       revision = revision + 1, updated_at = now()
                   WHERE id = $1""",
                account_id,
                name,
                None if config is None else json.dumps(config),
                None if sealed is None else sealed.model_dump_json(),
            )
    except asyncpg.UniqueViolationError:
        return False
    return True


async def delete_account(conn: asyncpg.Connection, account_id: str) -> None:
    await conn.execute("DELETE FROM provider_accounts WHERE id = $1", account_id)
