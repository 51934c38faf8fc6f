"""The numbered feed of public events behind GET /v1/events, and the leases of open streams."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import NamedTuple, NoReturn
from uuid import UUID

import asyncpg

from shared.db import listen_forever
from shared.events import Envelope
from shared.loops import every

RETENTION = timedelta(days=7)
WAKE_CHANNEL = "boreas_event_feed"
# Leases expired this long ago belong to users who have not opened a stream since: tidied hourly.
STALE_LEASES = timedelta(hours=1)


class FeedRow(NamedTuple):
    seq: int
    owner: str | None
    topic: str
    envelope: str  # the CloudEvent as JSON text


class StreamLease(NamedTuple):
    """A slot held for an open stream: of ``owner``'s, opened with the token of ``token_digest``."""

    stream_id: UUID
    owner: str
    token_digest: bytes


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
    await conn.execute(f"SELECT pg_notify('{WAKE_CHANNEL}', '')")


class PostgresFeed:
    """What the event hub (services/gateway/event_hub.py) reads and writes, in PostgreSQL."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def horizon(self) -> int:
        return await self.pool.fetchval("SELECT coalesce(max(seq), 0) FROM event_feed")

    async def after(self, seq: int, limit: int) -> list[FeedRow]:
        """Everyone's events numbered after ``seq``, the lowest first."""
        rows = await self.pool.fetch(
            """SELECT seq, owner, topic, envelope FROM event_feed
               WHERE seq > $1 ORDER BY seq LIMIT $2""",
            seq,
            limit,
        )
        return [FeedRow(*row) for row in rows]

    async def backlog(self, after: int, upto: int, owner: str | None, limit: int) -> list[FeedRow]:
        """Events numbered in (``after``, ``upto``], the lowest first: ``owner``'s, or everyone's
        for ``None``. Two statements rather than ``owner IS NULL OR``: each keeps its index."""
        if owner is None:
            rows = await self.pool.fetch(
                """SELECT seq, owner, topic, envelope FROM event_feed
                   WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3""",
                after,
                upto,
                limit,
            )
        else:
            rows = await self.pool.fetch(
                """SELECT seq, owner, topic, envelope FROM event_feed
                   WHERE owner = $3 AND seq > $1 AND seq <= $2 ORDER BY seq LIMIT $4""",
                after,
                upto,
                owner,
                limit,
            )
        return [FeedRow(*row) for row in rows]

    async def listen(self, on_notify: Callable[[], None]) -> None:
        """Call ``on_notify`` whenever an append commits (for ever; the hub polls as well)."""
        await listen_forever(self.pool, WAKE_CHANNEL, lambda *_: on_notify(), retry_interval=1.0)

    async def admit(self, lease: StreamLease, holder: str, cap: int, lease_seconds: float) -> bool:
        """Lease a slot for a new stream, unless ``cap`` live ones of its owner hold them all.
        Admissions of one owner take turns; expired leases (of a process that died) go first."""
        stream_id, owner, token_digest = lease
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """SELECT pg_advisory_xact_lock(
                       hashtext('boreas.event_stream_leases'), hashtext($1))""",
                owner,
            )
            await conn.execute(
                "DELETE FROM event_stream_leases WHERE owner = $1 AND expires_at <= now()", owner
            )
            held = await conn.fetchval(
                "SELECT count(*) FROM event_stream_leases WHERE owner = $1", owner
            )
            if held >= cap:
                return False
            await conn.execute(
                """INSERT INTO event_stream_leases
                       (stream_id, owner, token_digest, holder, expires_at)
                   VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))""",
                stream_id,
                owner,
                token_digest,
                holder,
                lease_seconds,
            )
            return True

    async def renew(
        self, holder: str, leases: Sequence[StreamLease], lease_seconds: float
    ) -> set[UUID]:
        """Extend the ``leases`` of ``holder``'s open streams in one statement, and put back any
        that expired meanwhile (this process was cut off from the database); returns the ids of
        those whose token is no longer valid: revoked, expired, or its user disabled or deleted
        (as identity.user_of_token sees it, by the database's clock)."""
        rows = await self.pool.fetch(
            """WITH renewed AS (
                   INSERT INTO event_stream_leases
                       (stream_id, owner, token_digest, holder, expires_at)
                   SELECT stream_id, owner, token_digest, $4, now() + make_interval(secs => $5)
                   FROM unnest($1::uuid[], $2::text[], $3::bytea[])
                        AS s(stream_id, owner, token_digest)
                   ON CONFLICT (stream_id) DO UPDATE SET expires_at = excluded.expires_at
                   RETURNING stream_id, token_digest)
               SELECT stream_id FROM renewed r
               WHERE NOT EXISTS (
                   SELECT 1 FROM tokens t JOIN users u ON u.id = t.user_id
                   WHERE t.digest = r.token_digest AND t.revoked_at IS NULL
                     AND t.expires_at > now() AND u.disabled_at IS NULL
                     AND u.deleted_at IS NULL)""",
            [lease.stream_id for lease in leases],
            [lease.owner for lease in leases],
            [lease.token_digest for lease in leases],
            holder,
            lease_seconds,
        )
        return {row["stream_id"] for row in rows}

    async def release(self, stream_id: UUID) -> None:
        await self.pool.execute("DELETE FROM event_stream_leases WHERE stream_id = $1", stream_id)

    async def release_holder(self, holder: str) -> None:
        await self.pool.execute("DELETE FROM event_stream_leases WHERE holder = $1", holder)


async def prune(pool: asyncpg.Pool, now: datetime, keep: timedelta) -> None:
    await pool.execute("DELETE FROM event_feed WHERE received_at < $1", now - keep)
    await pool.execute(
        "DELETE FROM event_stream_leases WHERE expires_at < now() - $1::interval", STALE_LEASES
    )


async def prune_forever(pool: asyncpg.Pool, clock: Callable[[], datetime]) -> NoReturn:
    """Keep a week of events for resuming streams; older ones go, hourly."""

    async def step() -> None:
        await prune(pool, clock(), RETENTION)

    await every(3600, step, name="feed_pruning")
