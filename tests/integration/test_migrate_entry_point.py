"""`python -m shared.migrate` (what deploy/k8s's migrations Job runs) brings every service's schema
up to date on a fresh database, is a no-op the second time, and fails on a changed migration."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import asyncpg

from shared.migrate import service_directory
from shared.services import SERVICES
from tests.infra import Infrastructure

ROOT = Path(__file__).resolve().parents[2]


def run_migrate(database_url: str, *services: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BOREAS_DATABASE_URL": database_url}
    return subprocess.run(
        [sys.executable, "-m", "shared.migrate", *services],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def expected_versions(service: str) -> int:
    shared = len(list((ROOT / "shared" / "migrations").glob("*.sql")))
    return shared + len(list((service_directory(service) / "migrations").glob("*.sql")))


async def applied_versions(database_url: str) -> dict[str, int]:
    conn = await asyncpg.connect(database_url)
    try:
        return {
            service: await conn.fetchval(f"SELECT count(*) FROM {service}.schema_migrations")
            for service in SERVICES
        }
    finally:
        await conn.close()


def test_migrates_every_schema_once_and_exits(infra: Infrastructure) -> None:
    with infra.isolated() as (_amqp_url, database_url):
        first = run_migrate(database_url)
        assert first.returncode == 0, first.stderr
        applied = asyncio.run(applied_versions(database_url))
        assert applied == {service: expected_versions(service) for service in SERVICES}
        assert first.stderr.count("migration_applied") == sum(applied.values())

        again = run_migrate(database_url)
        assert again.returncode == 0, again.stderr
        assert "migration_applied" not in again.stderr
        assert asyncio.run(applied_versions(database_url)) == applied


def test_fails_when_an_applied_migration_changed(infra: Infrastructure) -> None:
    with infra.isolated() as (_amqp_url, database_url):
        assert run_migrate(database_url, "quota").returncode == 0

        async def tamper() -> None:
            conn = await asyncpg.connect(database_url)
            try:
                await conn.execute(
                    "UPDATE quota.schema_migrations SET checksum = 'x' WHERE version = 'quota/0001'"
                )
            finally:
                await conn.close()

        asyncio.run(tamper())
        changed = run_migrate(database_url, "quota")
        assert changed.returncode != 0
        assert "changed after it was applied" in changed.stderr


def test_refuses_an_unknown_service() -> None:
    refused = run_migrate("postgresql://unused@127.0.0.1:1/none", "nope")
    assert refused.returncode == 2
    assert "unknown service nope" in refused.stderr
