"""Lease policies, one per user (a user without one has :data:`leases.NO_POLICY`)."""

from __future__ import annotations

import asyncpg

from services.gateway.leases import NO_POLICY
from services.gateway.schemas import LeasePolicy

_COLUMNS = "default_seconds, max_seconds, on_expiry, warn_seconds"


async def policy_of(conn: asyncpg.Connection | asyncpg.Pool, username: str) -> LeasePolicy:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM lease_policies WHERE username = $1", username
    )
    return LeasePolicy(**row) if row else NO_POLICY


async def set_policy(conn: asyncpg.Connection, username: str, policy: LeasePolicy) -> None:
    await conn.execute(
        f"""INSERT INTO lease_policies (username, {_COLUMNS}) VALUES ($1, $2, $3, $4, $5)
            ON CONFLICT (username) DO UPDATE SET default_seconds = $2, max_seconds = $3,
                on_expiry = $4, warn_seconds = $5, updated_at = now()""",
        username,
        policy.default_seconds,
        policy.max_seconds,
        policy.on_expiry,
        policy.warn_seconds,
    )
