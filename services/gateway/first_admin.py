"""The first admin: created at start when no admin exists (BOREAS_ADMIN_PASSWORD, or in dev a
generated password printed once to the terminal, never to the structured log)."""

from __future__ import annotations

import asyncio
import secrets
import sys

import asyncpg
import structlog

from services.gateway import security
from services.gateway.repository import audit, identity
from shared.config import GatewaySettings

log = structlog.get_logger(__name__)


class NoAdminPassword(RuntimeError):
    pass


async def ensure_admin(pool: asyncpg.Pool, settings: GatewaySettings) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await identity.lock_bootstrap(conn)
        if await identity.admin_exists(conn):
            return
        if settings.admin_password is not None:
            password, generated = settings.admin_password.get_secret_value(), False
        elif settings.env == "dev":
            password, generated = secrets.token_urlsafe(18), True
        else:
            raise NoAdminPassword("no admin exists: set BOREAS_ADMIN_PASSWORD for the first start")
        password_hash = await asyncio.to_thread(security.hash_password, password)
        created = await identity.create_user(
            conn, username="admin", password_hash=password_hash, role="admin"
        )
        if created is None:
            raise NoAdminPassword("a non-admin user named 'admin' exists; cannot bootstrap")
        await audit.record(
            conn,
            actor="boreas",
            action="user_created",
            target="admin",
            detail={"role": "admin", "bootstrap": True},
        )
    log.info("admin_created", generated_password=generated)
    if generated:
        print(
            f"\n  Boreas created user 'admin' with password: {password}\n"
            "  (shown once; set BOREAS_ADMIN_PASSWORD to choose it)\n",
            file=sys.stderr,
            flush=True,
        )
