"""The simulated cloud through its libcloud driver: lifecycle, auth, capacity, failures,
latency, throttling, lookups by tag."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import asyncpg
import httpx
import pytest
from libcloud.common.types import InvalidCredsError
from libcloud.compute.types import NodeState

from shared.clouds.simulator.driver import SimulatorError, SimulatorNodeDriver
from shared.clouds.simulator.listing import sql_isoformat
from shared.testing import wait_until
from tests.processes import simulator_process

FAST = {"timings": {"boot": 0.3, "stop": 0.2, "reboot": 0.2, "terminate": 0.2}}


def account(url: str, **settings: object) -> SimulatorNodeDriver:
    driver = SimulatorNodeDriver(f"key-{uuid.uuid4().hex[:8]}", "secret", endpoint=url)
    driver.ex_ensure_account({**FAST, **settings})
    return driver


async def state_of(driver: SimulatorNodeDriver, node_id: str) -> str:
    nodes = await asyncio.to_thread(driver.list_nodes)
    return next(n.extra["state"] for n in nodes if n.id == node_id)


async def reaches(driver: SimulatorNodeDriver, node_id: str, state: str) -> None:
    async def check() -> bool:
        return await state_of(driver, node_id) == state

    await wait_until(check, timeout=10, what=f"node {state}")


async def test_a_node_lives_through_its_whole_lifecycle(simulator_url: str) -> None:
    driver = account(simulator_url)
    size = next(s for s in driver.list_sizes() if s.extra["cpus"] == 2)
    image = next(i for i in driver.list_images() if i.name == "debian-12")
    region = next(r for r in driver.list_locations() if r.id == "south")
    node = driver.create_node("web-1", size, image, region, ex_metadata={"boreas-instance": "i-1"})
    assert node.state == NodeState.PENDING
    assert (node.extra["region"], node.extra["tags"]) == ("south", {"boreas-instance": "i-1"})

    await reaches(driver, node.id, "running")
    driver.stop_node(node)
    await reaches(driver, node.id, "stopped")
    driver.start_node(node)
    await reaches(driver, node.id, "running")
    driver.reboot_node(node)
    assert await state_of(driver, node.id) in ("rebooting", "running")
    await reaches(driver, node.id, "running")
    driver.destroy_node(node)
    await reaches(driver, node.id, "terminated")
    with pytest.raises(SimulatorError, match="IncorrectInstanceState"):
        driver.stop_node(node)


def test_wrong_secret_is_refused(simulator_url: str) -> None:
    driver = account(simulator_url)
    thief = SimulatorNodeDriver(driver.key, "not-the-secret", endpoint=simulator_url)
    with pytest.raises(InvalidCredsError):
        thief.list_nodes()
    with pytest.raises(InvalidCredsError):
        thief.ex_ensure_account({})


def test_accounts_do_not_see_each_others_nodes(simulator_url: str) -> None:
    a, b = account(simulator_url), account(simulator_url)
    node = a.create_node("only-a", a.list_sizes()[0], a.list_images()[0])
    assert node.id in {n.id for n in a.list_nodes()}
    assert b.list_nodes() == []


def test_capacity_is_enforced(simulator_url: str) -> None:
    driver = account(simulator_url, capacity=2)
    size, image = driver.list_sizes()[0], driver.list_images()[0]
    driver.create_node("one", size, image)
    driver.create_node("two", size, image)
    with pytest.raises(SimulatorError, match="InsufficientCapacity") as refused:
        driver.create_node("three", size, image)
    assert refused.value.status == 409


def test_injected_create_failures(simulator_url: str) -> None:
    driver = account(simulator_url, create_failure_rate=1.0)
    with pytest.raises(SimulatorError, match="ServiceUnavailable"):
        driver.create_node("doomed", driver.list_sizes()[0], driver.list_images()[0])
    assert driver.list_nodes() == []


def test_unknown_size_image_and_region_are_refused(simulator_url: str) -> None:
    driver = account(simulator_url, regions=["north"])
    size, image = driver.list_sizes()[0], driver.list_images()[0]
    south = type(driver.list_locations()[0])("south", "south", "SIM", driver)
    with pytest.raises(SimulatorError, match="InvalidRegion"):
        driver.create_node("x", size, image, south)


async def test_a_killed_node_is_terminated_at_once(simulator_url: str) -> None:
    driver = account(simulator_url)
    node = driver.create_node("victim", driver.list_sizes()[0], driver.list_images()[0])
    driver.ex_kill_node(node)
    assert await state_of(driver, node.id) == "terminated"


async def test_state_is_shared_and_survives_a_restart(database_url: str) -> None:
    with simulator_process(database_url) as first:
        driver = account(first)
        node = driver.create_node("durable", driver.list_sizes()[0], driver.list_images()[0])
    with simulator_process(database_url) as second:
        again = SimulatorNodeDriver(driver.key, "secret", endpoint=second)
        assert node.id in {n.id for n in again.list_nodes()}


POOL = 10  # the simulator's database connections (shared.db.create_pool's max_size)


async def test_every_call_waits_the_latency(simulator_url: str) -> None:
    driver = account(simulator_url)
    node = driver.create_node("slow", driver.list_sizes()[0], driver.list_images()[0])
    driver.ex_ensure_account({**FAST, "api_latency": 3.0})
    calls = [
        ("GET", "/v1/sizes"),
        ("GET", "/v1/images"),
        ("GET", "/v1/regions"),
        ("GET", "/v1/nodes"),
        ("POST", f"/v1/nodes/{node.id}/stop"),
        ("DELETE", f"/v1/nodes/{node.id}"),
    ]
    # A caller that waits less than the latency for an answer hears nothing back (the
    # create's case is test_a_create_whose_caller_gives_up_leaves_its_node's). Connecting may
    # take a busy machine longer: that is not the wait measured.
    async with httpx.AsyncClient(
        base_url=simulator_url, auth=(driver.key, "secret"), timeout=httpx.Timeout(0.5, connect=30)
    ) as client:
        answers = await asyncio.gather(
            *(client.request(method, path) for method, path in calls), return_exceptions=True
        )
    assert all(isinstance(a, httpx.ReadTimeout) for a in answers), answers


async def test_calls_wait_their_latency_without_holding_a_database_connection(
    simulator_url: str,
) -> None:
    waiting, latency = POOL + 5, 10.0
    slow = account(simulator_url, api_latency=latency, api_rate=0.001, api_burst=waiting)
    other = account(simulator_url)
    async with httpx.AsyncClient(
        base_url=simulator_url, auth=(slow.key, "secret"), timeout=3 * latency
    ) as client:
        calls = [asyncio.create_task(client.get("/v1/nodes")) for _ in range(waiting)]
        try:

            async def all_arrived() -> bool:
                # Each call takes a token as it arrives: once none is left, one more is refused
                # at once. (A probe that finds a token left waits too, and is given up on.)
                try:
                    probe = await client.get("/v1/regions", timeout=2)
                except httpx.ReadTimeout:
                    return False
                return probe.status_code == 503

            await wait_until(all_arrived, timeout=30, what="the slow calls waiting in the cloud")
            # Another account's listing, a database query, is served meanwhile: the waiting
            # calls, more than the pool has connections, hold none of them (else the listing
            # would wait for one of them to end, a latency away).
            listed = await asyncio.wait_for(asyncio.to_thread(other.list_nodes), latency / 2)
            assert listed == []
            assert sum(not c.done() for c in calls) > POOL, "the slow calls are still waiting"
        finally:
            # Let them end: the simulator, stopped after this module, finishes its requests.
            await asyncio.gather(*calls, return_exceptions=True)


async def test_a_create_whose_caller_gives_up_leaves_its_node(
    simulator_url: str, database_url: str
) -> None:
    driver = account(simulator_url, api_latency=2.0)
    size, image = driver.list_sizes()[0], driver.list_images()[0]
    async with httpx.AsyncClient(
        base_url=simulator_url, auth=(driver.key, "secret"), timeout=0.3
    ) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post(
                "/v1/nodes", json={"name": "orphan", "size": size.id, "image": image.id}
            )
    # The answer never came, yet the cloud made the node: the ambiguity a caller must resolve.
    # (Read from its store: a listing would itself wait the latency, long enough for any create.)
    db = await asyncpg.connect(database_url)
    try:
        made = await db.fetch("SELECT name FROM simulator.nodes WHERE api_key = $1", driver.key)
    finally:
        await db.close()
    assert [row["name"] for row in made] == ["orphan"]


async def test_calls_beyond_the_rate_are_refused_at_once(simulator_url: str) -> None:
    driver = account(simulator_url, api_rate=0.001, api_burst=3)
    await asyncio.gather(*(asyncio.to_thread(driver.list_sizes) for _ in range(3)))
    # A latency longer than the refused call's timeout: a refusal that waited it times out.
    driver.ex_ensure_account({**FAST, "api_rate": 0.001, "api_burst": 3, "api_latency": 10.0})
    async with httpx.AsyncClient(
        base_url=simulator_url, auth=(driver.key, "secret"), timeout=5
    ) as client:
        assert (await client.get("/v1/nodes")).status_code == 503

    with pytest.raises(SimulatorError) as refused:
        driver.list_nodes()
    assert (refused.value.code, refused.value.status) == ("RequestLimitExceeded", 503)
    assert "Request limit exceeded." in str(refused.value)

    driver.ex_ensure_account({**FAST, "api_rate": None, "api_latency": 0.0})  # lifted at once
    assert driver.list_nodes() == []


def test_a_node_is_found_by_its_tag_alone(simulator_url: str) -> None:
    driver, other = account(simulator_url), account(simulator_url)
    size, image = driver.list_sizes()[0], driver.list_images()[0]
    nodes = [
        driver.create_node(f"n{i}", size, image, ex_metadata={"boreas-instance": f"i-{i}"})
        for i in range(3)
    ]
    driver.create_node("team", size, image, ex_metadata={"team": "blue", "x": "i-1"})
    other.create_node("look-alike", size, image, ex_metadata={"boreas-instance": "i-1"})

    found = driver.ex_list_nodes_tagged("boreas-instance", "i-1")
    assert [n.id for n in found] == [nodes[1].id]
    assert found[0].extra["tags"] == {"boreas-instance": "i-1"}
    assert [n.name for n in driver.ex_list_nodes_tagged("team", "blue")] == ["team"]
    assert driver.ex_list_nodes_tagged("boreas-instance", "i-9") == []

    driver.ex_kill_node(nodes[1])  # terminated nodes stay findable, as they stay listed
    assert [n.extra["state"] for n in driver.ex_list_nodes_tagged("boreas-instance", "i-1")] == [
        "terminated"
    ]


async def test_the_tag_lookup_is_an_index_lookup(simulator_url: str, database_url: str) -> None:
    key = account(simulator_url).key
    conn = await asyncpg.connect(database_url, server_settings={"search_path": "simulator"})
    try:
        await conn.execute(
            """INSERT INTO nodes (id, api_key, name, size_id, image_id, region, tags, state,
                                  since, created_at)
               SELECT $1 || '-' || g, $1, 'n', 'sim.small', 'img-debian-12', 'north',
                      jsonb_build_object('boreas-instance', 'i-' || g), 'running', now(), now()
               FROM generate_series(1, 20000) g""",
            key,
        )
        await conn.execute("ANALYZE nodes")
        plan = await conn.fetchval(
            f"""EXPLAIN SELECT id FROM nodes
                WHERE api_key = '{key}' AND tags->>'boreas-instance' = 'i-77'"""
        )
    finally:
        await conn.close()
    assert "nodes_boreas_instance" in plan


@pytest.mark.parametrize("microsecond", [0, 5, 123456])
async def test_postgresql_writes_timestamps_as_python_does(
    database_url: str, microsecond: int
) -> None:
    moment = datetime(2026, 3, 4, 5, 6, 7, microsecond, tzinfo=UTC)
    # Whatever the session's time zone.
    conn = await asyncpg.connect(database_url, server_settings={"timezone": "Asia/Kolkata"})
    try:
        text = await conn.fetchval(f"SELECT {sql_isoformat('$1::timestamptz')}", moment)
    finally:
        await conn.close()
    assert text == moment.isoformat()
