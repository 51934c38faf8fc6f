"""Users, tokens and token-request rate limits."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from shared.db import TRANSIENT_DB_ERRORS

RATE_LIMIT_PRUNE_SECONDS = 300


@dataclass(frozen=True)
class User:
    id: uuid.UUID
    username: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


async def create_user(
    conn: asyncpg.Connection, *, username: str, password_hash: str, role: str
) -> User | None:
    """The new user, or None when the username is taken."""
    row = await conn.fetchrow(
        """INSERT INTO users (username, password_hash, role) VALUES ($1, $2, $3)
           ON CONFLICT (username) DO NOTHING RETURNING id, username, role""",
        username,
        password_hash,
        role,
    )
    return User(**row) if row else None


async def admin_exists(conn: asyncpg.Connection) -> bool:
    return await conn.fetchval("SELECT EXISTS (SELECT 1 FROM users WHERE role = 'admin')")


async def credentials_of(conn: asyncpg.Connection, username: str) -> tuple[User, str] | None:
    row = await conn.fetchrow(
        "SELECT id, username, role, password_hash FROM users WHERE username = $1", username
    )
    if row is None:
        return None
    return User(row["id"], row["username"], row["role"]), row["password_hash"]


async def user_exists(conn: asyncpg.Connection, username: str) -> bool:
    return await conn.fetchval("SELECT EXISTS (SELECT 1 FROM users WHERE username = $1)", username)


async def store_token(
    conn: asyncpg.Connection, *, digest: bytes, user_id: uuid.UUID, expires_at: datetime
) -> None:
    await conn.execute(
        "INSERT INTO tokens (digest, user_id, expires_at) VALUES ($1, $2, $3)",
        digest,
        user_id,
        expires_at,
    )


async def user_of_token(conn: asyncpg.Connection, digest: bytes, now: datetime) -> User | None:
    row = await conn.fetchrow(
        """SELECT u.id, u.username, u.role FROM tokens t JOIN users u ON u.id = t.user_id
           WHERE t.digest = $1 AND t.revoked_at IS NULL AND t.expires_at > $2""",
        digest,
        now,
    )
    return User(**row) if row else None


async def revoke_token(conn: asyncpg.Connection, digest: bytes, now: datetime) -> None:
    await conn.execute(
        "UPDATE tokens SET revoked_at = $2 WHERE digest = $1 AND revoked_at IS NULL", digest, now
    )


async def rate_count(
    conn: asyncpg.Connection, bucket: str, now: datetime, window: timedelta
) -> tuple[int, datetime]:
    """``bucket``'s hits in its current window and when that window ends (0 when none is open)."""
    row = await conn.fetchrow(
        "SELECT hits, window_start FROM rate_limits WHERE bucket = $1 AND window_start > $2",
        bucket,
        now - window,
    )
    return (row["hits"], row["window_start"] + window) if row else (0, now + window)


async def hit_rate_limit(
    conn: asyncpg.Connection, bucket: str, now: datetime, window: timedelta
) -> tuple[int, datetime]:
    """Count one request in ``bucket``'s current window: (hits so far, when the window ends)."""
    row = await conn.fetchrow(
        """INSERT INTO rate_limits (bucket, window_start, hits) VALUES ($1, $2, 1)
           ON CONFLICT (bucket) DO UPDATE SET
               window_start = CASE WHEN rate_limits.window_start <= $2 - $3::interval
                                   THEN $2 ELSE rate_limits.window_start END,
               hits = CASE WHEN rate_limits.window_start <= $2 - $3::interval
                           THEN 1 ELSE rate_limits.hits + 1 END
           RETURNING hits, window_start""",
        bucket,
        now,
        window,
    )
    return row["hits"], row["window_start"] + window


async def prune_rate_limits_forever(
    pool: asyncpg.Pool, clock: Callable[[], datetime], window: timedelta
) -> None:
    """Windows that have ended count for nothing: delete them every few minutes, so buckets
    made up by a guesser (a row per username and address) do not pile up."""
    while True:
        with contextlib.suppress(*TRANSIENT_DB_ERRORS):
            await pool.execute("DELETE FROM rate_limits WHERE window_start <= $1", clock() - window)
        await asyncio.sleep(RATE_LIMIT_PRUNE_SECONDS)
