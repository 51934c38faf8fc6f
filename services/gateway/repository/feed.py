"""The numbered feed of public events behind GET /v1/events."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime, timedelta

import asyncpg

from shared.db import TRANSIENT_DB_ERRORS
from shared.events import Envelope

RETENTION = timedelta(days=7)


async def append(conn: asyncpg.Connection, envelopes: list[Envelope]) -> None:
    """Number ``envelopes`` in this order. Appends take turns (a lock held to their commit), so
    numbers become visible in increasing order and a reader that saw N missed nothing below N."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('boreas.event_feed'))")
    await conn.execute(
        """INSERT INTO event_feed (event_id, owner, topic, envelope)
           SELECT event_id, owner, topic, envelope
           FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[]) WITH ORDINALITY
                AS e(event_id, owner, topic, envelope, n)
           ORDER BY n
           ON CONFLICT (event_id) DO NOTHING""",
        [e.id for e in envelopes],
        [e.data.get("owner") for e in envelopes],
        [e.topic for e in envelopes],
        [e.model_dump_json(exclude_none=True) for e in envelopes],
    )
    await conn.execute("SELECT pg_notify('boreas_event_feed', '')")


async def after(
    pool: asyncpg.Pool, seq: int, *, owner: str | None, limit: int = 200
) -> list[asyncpg.Record]:
    """Events numbered after ``seq``: the owner's own, or everyone's for ``owner=None``."""
    return await pool.fetch(
        """SELECT seq, topic, envelope FROM event_feed
           WHERE seq > $1 AND ($2::text IS NULL OR owner = $2) ORDER BY seq LIMIT $3""",
        seq,
        owner,
        limit,
    )


async def prune(pool: asyncpg.Pool, now: datetime, keep: timedelta) -> None:
    await pool.execute("DELETE FROM event_feed WHERE received_at < $1", now - keep)


async def prune_forever(pool: asyncpg.Pool, clock: Callable[[], datetime]) -> None:
    """Keep a week of events for resuming streams; older ones go, hourly."""
    while True:
        with contextlib.suppress(*TRANSIENT_DB_ERRORS):
            await prune(pool, clock(), RETENTION)
        await asyncio.sleep(3600)
