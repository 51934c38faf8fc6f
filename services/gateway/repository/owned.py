"""What the rows users own (instances, webhooks) have in common: only their owner sees one (admins
see all), and listings show them newest first, keyed by (created_at, id)."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg


async def fetch_visible(
    conn: asyncpg.Connection | asyncpg.Pool,
    select: str,
    row_id: uuid.UUID,
    *,
    viewer: str,
    everything: bool,
    for_update: bool,
) -> asyncpg.Record | None:
    """The row ``row_id`` among those ``select`` (a SELECT … WHERE …) finds, if ``viewer`` owns
    it or may see everything; None otherwise, alike."""
    return await conn.fetchrow(
        f"""{select} AND id = $1 AND ($3 OR owner = $2)
            {"FOR UPDATE" if for_update else ""}""",
        row_id,
        viewer,
        everything,
    )


async def fetch_page(
    conn: asyncpg.Connection | asyncpg.Pool,
    select: str,
    *,
    owner: str | None,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None,
) -> list[asyncpg.Record]:
    """Up to ``limit`` of the rows ``select`` (a SELECT … WHERE …) finds, newest first: those
    of ``owner`` (None: everyone's) that come after the key ``after``."""
    return await conn.fetch(
        f"""{select} AND ($1::text IS NULL OR owner = $1)
              AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4))
            ORDER BY created_at DESC, id DESC LIMIT $2""",
        owner,
        limit,
        *(after or (None, None)),
    )
