"""The append-only audit log."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import asyncpg

from services.gateway.schemas import AuditEntry


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
    after: tuple[datetime, int] | None,
    actor: str | None,
    action: str | None,
) -> list[AuditEntry]:
    """Up to ``limit`` entries, newest first, after the key ``after``."""
    rows = await conn.fetch(
        """SELECT id, at, actor, action, target, detail FROM audit_log
           WHERE ($2::timestamptz IS NULL OR (at, id) < ($2, $3))
             AND ($4::text IS NULL OR actor = $4)
             AND ($5::text IS NULL OR action = $5)
           ORDER BY at DESC, id DESC LIMIT $1""",
        limit,
        *(after or (None, None)),
        actor,
        action,
    )
    return [AuditEntry(**{**r, "detail": json.loads(r["detail"])}) for r in rows]
