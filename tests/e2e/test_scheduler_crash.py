"""kill -9 the scheduler between "intent recorded" and "cloud answered": once started again, it
finds the node the cloud made for the launch (by its tag) instead of launching a second one.

Everything runs as real processes (tests/system.py); the simulated cloud takes a while to answer
each call, and a create makes its node before that wait, so the test sees the node made and
kills the scheduler while it is still waiting for the answer. Once for a single launch, once
for a deployment's group.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx

from shared.testing import wait_until
from tests.infra import Infrastructure
from tests.integration.test_deployments import three_tier
from tests.system import (
    ADMIN_PASSWORD,
    System,
    add_simulator_accounts,
    login,
    new_user,
    running_system,
)


@dataclass(frozen=True)
class Crashable:
    """A whole system whose scheduler the test kills: its processes, its database, an HTTP
    client on its gateway and carol's headers (carol has the simulated-cloud accounts)."""

    system: System
    db: asyncpg.Connection
    client: httpx.AsyncClient
    carol: dict[str, str]

    async def nodes(self, instance_ids: Sequence[str]) -> dict[str, int]:
        """How many nodes the simulated cloud holds for each of these instances (by tag)."""
        rows = await self.db.fetch(
            """SELECT tags->>'boreas-instance' AS id, count(*) AS n FROM simulator.nodes
               WHERE tags->>'boreas-instance' = ANY($1) GROUP BY 1""",
            list(instance_ids),
        )
        return {r["id"]: r["n"] for r in rows}


@contextlib.asynccontextmanager
async def crashable(
    infra: Infrastructure, tmp_path: Path, *, accounts: int, api_latency: float
) -> AsyncIterator[Crashable]:
    """The system running on isolated infrastructure, a short cloud-call lease so a killed
    scheduler's calls are taken again soon, and ``accounts`` simulated-cloud accounts granted
    to carol whose cloud answers each call ``api_latency`` seconds late."""
    env = {"BOREAS_CLOUD_CALL_LEASE": "3", "BOREAS_POLL_INTERVAL": "0.5"}
    with (
        infra.isolated() as (amqp_url, database_url),
        running_system(amqp_url, database_url, tmp_path / "logs", env=env) as system,
    ):
        db = await asyncpg.connect(database_url)
        try:
            async with httpx.AsyncClient(base_url=system.gateway_url, timeout=30) as client:
                admin = await login(client, "admin", ADMIN_PASSWORD)
                carol = await new_user(client, admin, "carol", "carol-password")
                await add_simulator_accounts(
                    client,
                    admin,
                    system,
                    accounts,
                    simulator={"api_latency": api_latency, "timings": {"boot": 0}},
                    poll_interval=0.5,
                    grants=("carol",),
                )
                yield Crashable(system, db, client, carol)
        finally:
            await db.close()


async def test_a_restarted_scheduler_adopts_the_node_instead_of_launching_twice(
    infra: Infrastructure, tmp_path: Path
) -> None:
    async with crashable(infra, tmp_path, accounts=1, api_latency=1.5) as it:
        launched = await it.client.post(
            "/v1/instances",
            json={"name": "once", "image": "debian-12", "cpus": 1, "memory_mb": 512},
            headers=it.carol,
        )
        assert launched.status_code == 202, launched.text
        instance_id = launched.json()["id"]

        async def node_made() -> bool:
            return bool(await it.nodes([instance_id]))

        # The cloud has made the node and takes 1.5 s to say so: the scheduler dies waiting.
        await wait_until(node_made, timeout=30, interval=0.02, what="the node created")
        it.system.kill("scheduler")
        call = await it.db.fetchrow(
            "SELECT status, tried FROM scheduler.cloud_calls WHERE instance_id = $1",
            instance_id,
        )
        assert call["status"] == "pending", "the scheduler heard the answer before it died"
        assert call["tried"], "the account the create went to is on record"

        it.system.start("scheduler", index=0)

        async def running() -> dict | None:
            got = (await it.client.get(f"/v1/instances/{instance_id}", headers=it.carol)).json()
            return got if got["state"] == "running" else None

        instance = await wait_until(running, timeout=60, what="the launch running")
        assert await it.nodes([instance_id]) == {instance_id: 1}, "launched twice"
        assert "created by an earlier attempt" in instance["reason"]
        node_id = await it.db.fetchval(
            "SELECT id FROM simulator.nodes WHERE tags->>'boreas-instance' = $1", instance_id
        )
        assert instance["provider_instance_id"] == node_id


async def test_a_scheduler_killed_while_creating_a_group_completes_it_without_duplicates(
    infra: Infrastructure, tmp_path: Path
) -> None:
    """The scheduler dies while the cloud is making web's nodes (it answers a create a second
    after making the node); started again, it completes the deployment with one node per
    member."""
    async with crashable(infra, tmp_path, accounts=2, api_latency=1.0) as it:
        created = await it.client.post(
            "/v1/deployments", json={"name": "shop", "template": three_tier()}, headers=it.carol
        )
        assert created.status_code == 202, created.text
        path = f"/v1/deployments/{created.json()['id']}"
        groups = (await it.client.get(path, headers=it.carol)).json()["groups"]
        members = {g["name"]: [m["id"] for m in g["instances"]] for g in groups}
        every = [i for ids in members.values() for i in ids]

        async def a_web_node_made() -> bool:
            return bool(await it.nodes(members["web"]))

        await wait_until(a_web_node_made, timeout=60, interval=0.02, what="a web node made")
        it.system.kill("scheduler")
        it.system.start("scheduler", index=0)

        async def running() -> bool:
            return (await it.client.get(path, headers=it.carol)).json()["state"] == "running"

        await wait_until(running, timeout=90, what="the deployment running")
        assert await it.nodes(every) == dict.fromkeys(every, 1)
        # The node the killed scheduler was waiting for was found by its tag, not remade.
        reasons = [
            (await it.client.get(f"/v1/instances/{i}", headers=it.carol)).json()["reason"] or ""
            for i in members["web"]
        ]
        assert any("created by an earlier attempt" in r for r in reasons), reasons
