"""What the rows users own (instances, webhooks) have in common: only their owner sees one (admins
see all), and listings show them newest first, keyed by (created_at, id)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Generic, TypeVar

import asyncpg

Row = TypeVar("Row")


class OwnedRows(Generic[Row]):
    """The rows ``select`` (a SELECT … WHERE …) finds, each read by ``read``."""

    def __init__(self, select: str, read: Callable[[asyncpg.Record], Row]) -> None:
        self.select, self.read = select, read

    async def visible(
        self,
        conn: asyncpg.Connection | asyncpg.Pool,
        row_id: uuid.UUID,
        *,
        viewer: str,
        everything: bool,
        for_update: bool = False,
    ) -> Row | None:
        """The row if ``viewer`` owns it (or may see everything); None otherwise, alike."""
        row = await conn.fetchrow(
            f"""{self.select} AND id = $1 AND ($3 OR owner = $2)
                {"FOR UPDATE" if for_update else ""}""",
            row_id,
            viewer,
            everything,
        )
        return self.read(row) if row else None

    async def page(
        self,
        conn: asyncpg.Connection | asyncpg.Pool,
        *,
        owner: str | None,
        limit: int,
        after: tuple[datetime, uuid.UUID] | None,
    ) -> list[Row]:
        """Up to ``limit`` rows, newest first: those of ``owner`` (None: everyone's) that come
        after the key ``after``."""
        rows = await conn.fetch(
            f"""{self.select} AND ($1::text IS NULL OR owner = $1)
                  AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4))
                ORDER BY created_at DESC, id DESC LIMIT $2""",
            owner,
            limit,
            *(after or (None, None)),
        )
        return [self.read(r) for r in rows]
