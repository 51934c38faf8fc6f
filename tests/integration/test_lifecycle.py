"""An instance's whole life on the simulated cloud, seen through the API and on the bus."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

from shared.clouds.simulator.driver import SimulatorNodeDriver
from shared.runtime import ServiceRuntime
from shared.testing import EventProbe, wait_until
from tests.integration.api import Api
from tests.integration.clouds import api_shows, tenant
from tests.integration.stack import IDLE_POLL_INTERVAL, simulator_account


def changed_to(instance_id: str, state: str):
    return lambda e: e.subject == instance_id and e.data["new_state"] == state


async def drive_through_lifecycle(
    api: Api, probe: EventProbe, owner: str, headers: dict, instance_id: str
) -> None:
    """pending → running → stop → stopped → start → running → terminate → terminated, each step
    seen as a CloudEvent on boreas.events and through the API."""

    async def act(method: str, path: str) -> None:
        response = await api.client.request(
            method, f"/v1/instances/{instance_id}{path}", headers=headers
        )
        assert response.status_code == 202, response.text

    [running] = await probe.wait_for(
        "instance.state_changed", changed_to(instance_id, "running"), timeout=20
    )
    assert running.data["old_state"] == "pending"
    assert running.source == "boreas/poller"
    assert running.data["owner"] == owner
    await api_shows(api, headers, instance_id, "running")

    await act("POST", "/stop")
    await probe.wait_for("instance.state_changed", changed_to(instance_id, "stopped"), timeout=20)
    await api_shows(api, headers, instance_id, "stopped")

    await act("POST", "/start")
    await probe.wait_for(
        "instance.state_changed",
        lambda e: changed_to(instance_id, "running")(e) and e.data["old_state"] == "stopped",
        timeout=20,
    )
    await api_shows(api, headers, instance_id, "running")

    await act("DELETE", "")
    await probe.wait_for(
        "instance.state_changed", changed_to(instance_id, "terminated"), timeout=20
    )
    await api_shows(api, headers, instance_id, "terminated")

    states = [
        (e.data["old_state"], e.data["new_state"])
        for e in probe.matching("instance.state_changed", lambda e: e.subject == instance_id)
    ]
    assert states[0] == ("pending", "running")
    assert ("stopped", "running") in states and states[-1][1] == "terminated"
    assert len(states) == len(set(states)), f"no transition published twice: {states}"


async def test_launch_stop_start_terminate_on_the_simulated_cloud(
    api: Api,
    clouds_side: tuple[ServiceRuntime, ServiceRuntime],
    simulator_url: str,
    probe: EventProbe,
) -> None:
    alice_name, alice, account = await tenant(api, simulator_url, clouds_side)
    launched = (await api.launch(alice, placement={"account": account["id"]})).json()
    [placed] = await probe.wait_for("instance.placed", lambda e: e.subject == launched["id"])
    assert (placed.data["cpus"], placed.data["memory_mb"]) == (2, 2048)
    await drive_through_lifecycle(api, probe, alice_name, alice, launched["id"])


async def test_a_node_killed_in_the_cloud_is_reported_terminated(
    api: Api,
    clouds_side: tuple[ServiceRuntime, ServiceRuntime],
    simulator_url: str,
    probe: EventProbe,
) -> None:
    _scheduler, poller = clouds_side
    api_key = f"k-{uuid.uuid4().hex[:8]}"
    _, alice, account = await tenant(api, simulator_url, clouds_side, api_key=api_key)
    instance_id = (await api.launch(alice, placement={"account": account["id"]})).json()["id"]
    [running] = await probe.wait_for(
        "instance.state_changed", changed_to(instance_id, "running"), timeout=15
    )

    cloud = SimulatorNodeDriver(api_key, "s3cret", endpoint=simulator_url)
    [node] = [
        n
        for n in await asyncio.to_thread(cloud.list_nodes)
        if n.id == running.data["provider_instance_id"]
    ]

    # Everything on the account settled, the poller puts its next poll an idle interval after
    # the last (its own arithmetic, read from its table: no clock of ours is involved).
    async def scheduled_idle() -> bool:
        gap = await poller.pool.fetchval(
            "SELECT extract(epoch FROM next_poll_at - last_poll_at) FROM accounts WHERE id = $1",
            account["id"],
        )
        return gap is not None and float(gap) == IDLE_POLL_INTERVAL

    await wait_until(scheduled_idle, timeout=30, what="the settled account polled at idle pace")
    await asyncio.to_thread(cloud.ex_kill_node, node)
    killed = datetime.now(UTC)

    [ended] = await probe.wait_for(
        "instance.state_changed", changed_to(instance_id, "terminated"), timeout=15
    )
    assert ended.data["old_state"] == "running"
    # Seen at the next poll: only a poll already under way when the kill landed may have
    # missed it (one at most: an account's polls do not overlap). Two or more successful polls
    # between the kill and the report mean the poller overlooked the dead node.
    observed = datetime.fromisoformat(ended.data["observed_at"])
    missed = await poller.pool.fetchval(
        "SELECT count(*) FROM polls WHERE account_id = $1 AND ok AND at > $2 AND at < $3",
        account["id"],
        killed,
        observed,
    )
    assert missed <= 1, f"{missed} polls after the kill did not report it"


async def test_nodes_made_outside_boreas_are_not_adopted(
    api: Api,
    clouds_side: tuple[ServiceRuntime, ServiceRuntime],
    simulator_url: str,
) -> None:
    _, poller = clouds_side
    api_key = f"k-{uuid.uuid4().hex[:8]}"
    account = await simulator_account(
        api, simulator_url, ["*"], followers=clouds_side, api_key=api_key
    )

    async def polled() -> bool:
        return bool(
            await poller.pool.fetchval("SELECT 1 FROM polls WHERE account_id = $1", account["id"])
        )

    await wait_until(polled, timeout=10, what="a first poll (which opens the cloud account)")
    cloud = SimulatorNodeDriver(api_key, "s3cret", endpoint=simulator_url)
    stray = await asyncio.to_thread(
        cloud.create_node, "hand-made", cloud.list_sizes()[0], cloud.list_images()[0]
    )

    async def reported() -> bool:
        return bool(
            await poller.pool.fetchval(
                "SELECT 1 FROM unmanaged_nodes WHERE account_id = $1 AND provider_instance_id = $2",
                account["id"],
                stray.id,
            )
        )

    await wait_until(reported, timeout=10, what="the stray node is reported")
    assert not await poller.pool.fetchval(
        "SELECT 1 FROM instances WHERE provider_instance_id = $1", stray.id
    )


async def test_random_deaths_in_the_simulated_cloud_reach_the_bus(
    api: Api,
    clouds_side: tuple[ServiceRuntime, ServiceRuntime],
    simulator_url: str,
    probe: EventProbe,
) -> None:
    _, alice, account = await tenant(api, simulator_url, clouds_side, deaths_per_hour=7200.0)
    # Pinned: elsewhere in the session, accounts granted to '*' are candidates too.
    instance_id = (await api.launch(alice, placement={"account": account["id"]})).json()["id"]
    [ended] = await probe.wait_for(
        "instance.state_changed", changed_to(instance_id, "terminated"), timeout=20
    )
    assert ended.data["old_state"] in ("pending", "running")
