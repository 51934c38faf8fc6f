"""PostgreSQL: one asyncpg pool per process, one schema per service, versioned SQL migrations.

Each service owns the schema named after it and never reads another's. The pool sets
``search_path`` to that schema, so SQL in ``repository.py`` and migrations is unqualified.
Migrations are plain ``NNNN_name.sql`` files applied in order, each once, under an advisory lock so
replicas starting together do not race; an applied file that has since changed stops the start.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import structlog

log = structlog.get_logger(__name__)

SHARED_MIGRATIONS = Path(__file__).with_name("migrations")
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")

# Errors that mean "the database is away or restarting", not "this unit of work is wrong".
# InternalClientError is what asyncpg raises when a connection that broke mid-operation is
# released ("cannot switch to state 15; another operation is in progress"): a lost connection.
TRANSIENT_DB_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    TimeoutError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
)


# Of those, the ones that say "another transaction got in the way": retry at once, not after
# an outage's backoff.
CONFLICT_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
)


def _database_name(url: str) -> str:
    name = urlsplit(url).path.lstrip("/")
    if not name:
        raise ValueError("BOREAS_DATABASE_URL must name a database")
    return name


async def ensure_database(url: str) -> None:
    """Create the database named in ``url`` if it does not exist yet."""
    name = _database_name(url)
    try:
        conn = await asyncpg.connect(url)
    except asyncpg.exceptions.InvalidCatalogNameError:
        maintenance = urlunsplit(urlsplit(url)._replace(path="/postgres"))
        admin = await asyncpg.connect(maintenance)
        try:
            quoted = '"' + name.replace('"', '""') + '"'
            await admin.execute(f"CREATE DATABASE {quoted}")
            log.info("database_created", database=name)
        except (
            asyncpg.exceptions.DuplicateDatabaseError,
            # Several processes creating it at once can also collide on the catalog's index.
            asyncpg.exceptions.UniqueViolationError,
        ):
            pass
        finally:
            await admin.close()
    else:
        await conn.close()


async def create_pool(
    url: str, schema: str, *, min_size: int = 1, max_size: int = 10
) -> asyncpg.Pool:
    """The process's one pool, bound to the service's schema (created if missing)."""
    if not _SCHEMA_NAME.match(schema):
        raise ValueError(f"invalid schema name {schema!r}")
    await ensure_database(url)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    finally:
        await conn.close()
    return await asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=max_size,
        server_settings={"search_path": schema, "application_name": f"boreas-{schema}"},
        command_timeout=30,
        reset=_keep_session,
    )


async def _keep_session(_conn: asyncpg.Connection) -> None:
    """What a released connection needs beyond asyncpg's own clean-up (which rolls back an open
    transaction and drops listeners): nothing. Boreas sets no session state but the schema (kept
    on purpose), takes advisory locks per transaction or unlocks them itself, and opens no
    cursors; so the default reset (unlock all, close all, unlisten, reset all), a round trip on
    every release, would buy nothing."""


@dataclass(frozen=True)
class Migration:
    version: str  # "<source>/<NNNN>", e.g. "shared/0001"
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(source: str, directory: Path) -> list[Migration]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if not match:
            raise ValueError(f"migration file name must be NNNN_name.sql: {path.name}")
        found.append(Migration(f"{source}/{match.group(1)}", path.stem, path.read_text()))
    return found


class MigrationChanged(RuntimeError):
    """An already-applied migration file differs from what was applied: fix the file, not the DB."""


async def migrate(pool: asyncpg.Pool, schema: str, migrations: Iterable[Migration]) -> list[str]:
    """Apply pending migrations in order, each in its own transaction. Returns applied versions."""
    applied_now = []
    async with pool.acquire() as conn:
        # Key the lock on the schema so different services migrate in parallel.
        await conn.execute("SELECT pg_advisory_lock(hashtext('boreas.migrate.' || $1))", schema)
        try:
            await conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       version text PRIMARY KEY,
                       name text NOT NULL,
                       checksum text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            done = {
                r["version"]: r["checksum"]
                for r in await conn.fetch("SELECT version, checksum FROM schema_migrations")
            }
            for migration in migrations:
                if migration.version in done:
                    if done[migration.version] != migration.checksum:
                        raise MigrationChanged(
                            f"{schema}: migration {migration.name} changed after it was applied"
                        )
                    continue
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum)"
                        " VALUES ($1, $2, $3)",
                        migration.version,
                        migration.name,
                        migration.checksum,
                    )
                applied_now.append(migration.version)
                log.info("migration_applied", schema=schema, migration=migration.name)
        finally:
            await conn.execute(
                "SELECT pg_advisory_unlock(hashtext('boreas.migrate.' || $1))", schema
            )
    return applied_now


def service_migrations(service_dir: Path) -> list[Migration]:
    """Shared tables (outbox, inbox) first, then the service's own."""
    return load_migrations("shared", SHARED_MIGRATIONS) + load_migrations(
        service_dir.name, service_dir / "migrations"
    )


async def listen_forever(
    pool: asyncpg.Pool, channel: str, on_notify: Callable[..., None], retry_interval: float
) -> None:
    """Hold a LISTEN connection on ``channel``; on loss, reconnect. Callers poll as well, so a
    notification missed while reconnecting only delays work."""
    while True:
        try:
            async with pool.acquire() as conn:
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                await conn.add_listener(channel, on_notify)
                try:
                    await lost.wait()
                finally:
                    with contextlib.suppress(Exception):
                        await conn.remove_listener(channel, on_notify)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.debug("listener_lost", channel=channel, error=repr(exc))
            await asyncio.sleep(retry_interval)
