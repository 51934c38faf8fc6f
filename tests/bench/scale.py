"""The simulated cloud at 100,000 instances: listing them through the libcloud driver, and the
poller's differ over them, against raw ceilings measured in the same run."""

from __future__ import annotations

import asyncio
import time

import asyncpg

from services.poller.diff import Known, Seen, diff
from shared.clouds.registry import boreas_instance_of, boreas_state
from shared.clouds.simulator.driver import SimulatorNodeDriver
from tests.processes import simulator_process


async def seed(database_url: str, api_key: str, n: int) -> None:
    conn = await asyncpg.connect(database_url, server_settings={"search_path": "simulator"})
    try:
        await conn.execute(
            """INSERT INTO nodes (id, api_key, name, size_id, image_id, region, tags, state,
                                  since, created_at)
               SELECT 'sim-bench-' || g, $1, 'node-' || g, 'sim.small', 'img-debian-12', 'north',
                      jsonb_build_object('boreas-instance', 'i-' || g), 'running', now(), now()
               FROM generate_series(1, $2) g""",
            api_key,
            n,
        )
    finally:
        await conn.close()


async def raw_fetch(database_url: str, api_key: str) -> float:
    conn = await asyncpg.connect(database_url, server_settings={"search_path": "simulator"})
    try:
        began = time.perf_counter()
        await conn.fetch("SELECT * FROM nodes WHERE api_key = $1", api_key)
        return time.perf_counter() - began
    finally:
        await conn.close()


def measure_scale(database_url: str, n: int) -> list[tuple[str, float, float, str]]:
    """Rows of (what, seconds, ceiling seconds, note)."""
    rows = []
    with simulator_process(database_url) as url:
        driver = SimulatorNodeDriver("bench-scale", "secret", endpoint=url)
        driver.ex_ensure_account({"timings": {"boot": 0}})
        asyncio.run(seed(database_url, "bench-scale", n))
        ceiling = asyncio.run(raw_fetch(database_url, "bench-scale"))
        began = time.perf_counter()
        nodes = driver.list_nodes()
        listed = time.perf_counter() - began
        assert len(nodes) == n
        rows.append((f"list {n:,} nodes via libcloud", listed, ceiling, "ceiling: SQL fetch"))

        seen = [Seen(str(x.id), boreas_instance_of(x), boreas_state(x)) for x in nodes]
        known = [Known(f"i-{i}", f"sim-bench-{i}", "pending") for i in range(1, n + 1)]
        managed = {k.provider_instance_id: k.instance_id for k in known}
        began = time.perf_counter()
        result = diff(known, seen, managed)
        differ = time.perf_counter() - began
        assert len(result.transitions) == n
        began = time.perf_counter()
        _ = {s.provider_instance_id: s for s in seen}  # the dict build alone: the floor of a diff
        floor = time.perf_counter() - began
        rows.append((f"diff {n:,} nodes (all changed)", differ, floor, "ceiling: dict build"))
    return rows
