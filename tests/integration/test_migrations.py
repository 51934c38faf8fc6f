"""Versioned migrations: applied once, in order, safe from racing replicas, never rewritten."""

from __future__ import annotations

import asyncio

import pytest

from shared.db import Migration, MigrationChanged, create_pool, ensure_database, migrate
from tests.infra import _drop_database, _with_db

FIRST = Migration("t/0001", "0001_things", "CREATE TABLE things (id int PRIMARY KEY)")
SECOND = Migration("t/0002", "0002_more", "ALTER TABLE things ADD COLUMN name text")


async def test_pending_migrations_apply_once_in_order(database_url: str, unique: str) -> None:
    pool = await create_pool(database_url, f"mig_{unique}")
    try:
        assert await migrate(pool, f"mig_{unique}", [FIRST]) == ["t/0001"]
        assert await migrate(pool, f"mig_{unique}", [FIRST, SECOND]) == ["t/0002"]
        assert await migrate(pool, f"mig_{unique}", [FIRST, SECOND]) == []
        await pool.execute("INSERT INTO things (id, name) VALUES (1, 'x')")
        schema_of_table = await pool.fetchval(
            "SELECT table_schema FROM information_schema.tables WHERE table_name = 'things'"
            " AND table_schema = $1",
            f"mig_{unique}",
        )
        assert schema_of_table == f"mig_{unique}"
    finally:
        await pool.close()


async def test_replicas_starting_together_apply_each_migration_once(
    database_url: str, unique: str
) -> None:
    pools = [await create_pool(database_url, f"mig_{unique}") for _ in range(4)]
    try:
        results = await asyncio.gather(
            *(migrate(p, f"mig_{unique}", [FIRST, SECOND]) for p in pools)
        )
        assert sorted(v for applied in results for v in applied) == ["t/0001", "t/0002"]
    finally:
        for pool in pools:
            await pool.close()


async def test_an_applied_migration_that_changed_stops_the_start(
    database_url: str, unique: str
) -> None:
    pool = await create_pool(database_url, f"mig_{unique}")
    try:
        await migrate(pool, f"mig_{unique}", [FIRST])
        edited = Migration(FIRST.version, FIRST.name, FIRST.sql + " -- edited")
        with pytest.raises(MigrationChanged, match="0001_things changed after it was applied"):
            await migrate(pool, f"mig_{unique}", [edited])
    finally:
        await pool.close()


async def test_a_failing_migration_leaves_nothing_half_applied(
    database_url: str, unique: str
) -> None:
    broken = Migration("t/0002", "0002_broken", "ALTER TABLE things ADD COLUMN a int; SELECT 1/0")
    pool = await create_pool(database_url, f"mig_{unique}")
    try:
        await migrate(pool, f"mig_{unique}", [FIRST])
        with pytest.raises(Exception, match="division by zero"):
            await migrate(pool, f"mig_{unique}", [FIRST, broken])
        columns = await pool.fetchval(
            "SELECT count(*) FROM information_schema.columns WHERE table_schema = $1"
            " AND table_name = 'things'",
            f"mig_{unique}",
        )
        assert columns == 1
        assert await pool.fetchval("SELECT count(*) FROM schema_migrations") == 1
    finally:
        await pool.close()


async def test_database_is_created_when_missing(database_url: str, unique: str) -> None:

    fresh = _with_db(database_url, f"boreas_test_new_{unique}")
    pool = await create_pool(fresh, "gateway")
    try:
        assert await pool.fetchval("SELECT current_database()") == f"boreas_test_new_{unique}"
    finally:
        await pool.close()
        await _drop_database(database_url, f"boreas_test_new_{unique}")


async def test_processes_creating_the_database_together_all_succeed(
    database_url: str, unique: str
) -> None:
    fresh = _with_db(database_url, f"boreas_test_race_{unique}")
    try:
        await asyncio.gather(*(ensure_database(fresh) for _ in range(6)))
    finally:
        await _drop_database(database_url, f"boreas_test_race_{unique}")
