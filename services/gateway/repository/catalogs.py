"""The accounts' catalogs as the scheduler last read them, and the accounts a launch may go to
with theirs: what prices a launch."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import asyncpg

from shared.events import CatalogSize, ProviderAccountCatalogRead


async def record_read(conn: asyncpg.Connection, event: ProviderAccountCatalogRead) -> None:
    """Keep the read unless a newer one is kept (a later account revision, or the same revision
    read later): any order of arrival keeps the same one."""
    await conn.execute(
        """INSERT INTO account_catalogs (account_id, revision, read_at, sizes, regions)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (account_id) DO UPDATE SET revision = excluded.revision,
               read_at = excluded.read_at, sizes = excluded.sizes, regions = excluded.regions
           WHERE (excluded.revision, excluded.read_at)
                 > (account_catalogs.revision, account_catalogs.read_at)""",
        event.account_id,
        event.revision,
        event.read_at,
        json.dumps([size.model_dump() for size in event.sizes]),
        json.dumps(event.regions),
    )


@dataclass(frozen=True)
class PricedAccount:
    """An account a launch may go to, with its catalog (None: not read yet)."""

    id: str
    name: str
    provider: str
    config: dict[str, Any]
    sizes: list[CatalogSize] | None


# The placement rule of shared.eligibility in SQL, driven by the grants index: the accounts granted
# to $1 (directly or through '*') that fit provider $2, account $3 (id or name) and region $4.
FITTING = """FROM account_grants g JOIN provider_accounts a ON a.id = g.account_id
             WHERE g.grantee IN ($1, '*')
               AND ($2::text IS NULL OR a.provider = $2)
               AND ($3::text IS NULL OR a.id = $3 OR a.name = $3)
               AND ($4::text IS NULL OR jsonb_typeof(a.config->'regions') IS DISTINCT FROM 'array'
                    OR a.config->'regions' ? $4)"""


async def fitting_accounts(
    conn: asyncpg.Connection,
    *,
    username: str,
    provider: str | None,
    account: str | None,
    region: str | None,
) -> list[PricedAccount]:
    """The accounts granted to ``username`` that fit the placement, with their catalogs."""
    rows = await conn.fetch(
        f"""SELECT DISTINCT ON (a.id) a.id, a.name, a.provider, a.config, c.sizes
            FROM (SELECT a.* {FITTING}) a
            LEFT JOIN account_catalogs c ON c.account_id = a.id
            ORDER BY a.id""",
        username,
        provider,
        account,
        region,
    )
    return [
        PricedAccount(
            id=row["id"],
            name=row["name"],
            provider=row["provider"],
            config=json.loads(row["config"]),
            sizes=None
            if row["sizes"] is None
            else [CatalogSize.model_validate(size) for size in json.loads(row["sizes"])],
        )
        for row in rows
    ]
