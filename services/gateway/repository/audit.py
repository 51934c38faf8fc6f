"""The append-only audit log."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import asyncpg


async def record(
    conn: asyncpg.Connection,
    *,
    actor: str,
    action: str,
    target: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    await conn.execute(
        "INSERT INTO audit_log (actor, action, target, detail) VALUES ($1, $2, $3, $4)",
        actor,
        action,
        target,
        json.dumps(detail or {}),
    )


async def page(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    limit: int,
    before: tuple[datetime, int] | None,
    actor: str | None,
    action: str | None,
) -> list[asyncpg.Record]:
    return await conn.fetch(
        """SELECT id, at, actor, action, target, detail FROM audit_log
           WHERE ($2::timestamptz IS NULL OR (at, id) < ($2, $3))
             AND ($4::text IS NULL OR actor = $4)
             AND ($5::text IS NULL OR action = $5)
           ORDER BY at DESC, id DESC LIMIT $1""",
        limit,
        before[0] if before else None,
        before[1] if before else None,
        actor,
        action,
    )
