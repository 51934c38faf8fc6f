"""Users, tokens and token-request rate limits."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, NoReturn

import asyncpg

from services.gateway.schemas import UserAccount
from shared.loops import every

RATE_LIMIT_PRUNE_SECONDS = 300


@dataclass(frozen=True)
class User:
    id: uuid.UUID
    username: str
    role: Literal["user", "admin"]

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


async def lock_bootstrap(conn: asyncpg.Connection) -> None:
    """Gateway replicas starting together take turns until the transaction ends: one creates
    the first admin, the others find it."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('boreas.bootstrap-admin'))")


async def admin_exists(conn: asyncpg.Connection) -> bool:
    return await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM users WHERE role = 'admin' AND deleted_at IS NULL)"
    )


@dataclass(frozen=True)
class Login:
    user: User
    password_hash: str
    disabled: bool


async def credentials_of(conn: asyncpg.Connection, username: str) -> Login | None:
    row = await conn.fetchrow(
        """SELECT id, username, role, password_hash, disabled_at IS NOT NULL AS disabled
           FROM users WHERE username = $1 AND deleted_at IS NULL""",
        username,
    )
    if row is None:
        return None
    return Login(
        User(row["id"], row["username"], row["role"]), row["password_hash"], row["disabled"]
    )


async def user_exists(conn: asyncpg.Connection, username: str) -> bool:
    return await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM users WHERE username = $1 AND deleted_at IS NULL)", username
    )


_ACCOUNT = "id, username, role, disabled_at IS NOT NULL AS disabled, created_at"


async def account_of(
    conn: asyncpg.Connection, username: str, *, for_update: bool = False
) -> UserAccount | None:
    """A user as admins see them (never the password hash); None if there is none."""
    row = await conn.fetchrow(
        f"SELECT {_ACCOUNT} FROM users WHERE username = $1 AND deleted_at IS NULL"
        + (" FOR UPDATE" if for_update else ""),
        username,
    )
    return UserAccount(**row) if row else None


async def users_page(
    conn: asyncpg.Connection, *, limit: int, after: tuple[str] | None
) -> list[UserAccount]:
    """Up to ``limit`` users in the order of their names, after the key ``after``."""
    rows = await conn.fetch(
        f"""SELECT {_ACCOUNT} FROM users
            WHERE deleted_at IS NULL AND ($2::text IS NULL OR username > $2)
            ORDER BY username LIMIT $1""",
        limit,
        *(after or (None,)),
    )
    return [UserAccount(**r) for r in rows]


async def other_active_admins(conn: asyncpg.Connection, username: str) -> int:
    """Admins who can still log in, besides ``username`` (locked, so two admins demoting each
    other at once cannot leave none)."""
    rows = await conn.fetch(
        """SELECT id FROM users WHERE role = 'admin' AND username <> $1
               AND disabled_at IS NULL AND deleted_at IS NULL FOR UPDATE""",
        username,
    )
    return len(rows)


async def update_user(
    conn: asyncpg.Connection,
    user_id: uuid.UUID,
    *,
    now: datetime,
    disabled: bool | None = None,
    role: str | None = None,
    password_hash: str | None = None,
) -> UserAccount:
    """The user as admins see them after the change."""
    row = await conn.fetchrow(
        f"""UPDATE users SET
               disabled_at = CASE WHEN $2::boolean IS NULL THEN disabled_at
                                  WHEN $2 THEN coalesce(disabled_at, $5) END,
               role = coalesce($3, role),
               password_hash = coalesce($4, password_hash)
           WHERE id = $1 RETURNING {_ACCOUNT}""",
        user_id,
        disabled,
        role,
        password_hash,
        now,
    )
    return UserAccount(**row)


async def revoke_all_tokens(conn: asyncpg.Connection, user_id: uuid.UUID, now: datetime) -> int:
    """Revoke every live token of the user; how many there were."""
    status = await conn.execute(
        """UPDATE tokens SET revoked_at = $2
           WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2""",
        user_id,
        now,
    )
    return int(status.split()[-1])


async def delete_user(conn: asyncpg.Connection, user_id: uuid.UUID, now: datetime) -> None:
    """Leave a tombstone: no password, no tokens, the name reserved for good."""
    await conn.execute("DELETE FROM tokens WHERE user_id = $1", user_id)
    await conn.execute(
        "UPDATE users SET deleted_at = $2, password_hash = '' WHERE id = $1",
        user_id,
        now,
    )


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
           WHERE t.digest = $1 AND t.revoked_at IS NULL AND t.expires_at > $2
             AND u.disabled_at IS NULL AND u.deleted_at IS NULL""",
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
) -> NoReturn:
    """Windows that have ended count for nothing: delete them every few minutes, so buckets
    made up by a guesser (a row per username and address) do not pile up."""

    async def step() -> None:
        await pool.execute("DELETE FROM rate_limits WHERE window_start <= $1", clock() - window)

    await every(RATE_LIMIT_PRUNE_SECONDS, step, name="rate_limit_pruning")
