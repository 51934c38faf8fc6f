"""kill -9 the scheduler between "intent recorded" and "cloud answered": once started again, it
finds the node the cloud made for the launch (by its tag) instead of launching a second one.

Everything runs as real processes (tests/system.py); the simulated cloud takes 1.5 s to answer
each call, and a create makes its node before that wait, so the test sees the node made and
kills the scheduler while it is still waiting for the answer.
"""

from __future__ import annotations

from pathlib import Path

import asyncpg
import httpx

from shared.testing import wait_until
from tests.infra import Infrastructure
from tests.system import ADMIN_PASSWORD, add_simulator_accounts, login, new_user, running_system


async def test_a_restarted_scheduler_adopts_the_node_instead_of_launching_twice(
    infra: Infrastructure, tmp_path: Path
) -> None:
    env = {"BOREAS_CLOUD_CALL_LEASE": "3", "BOREAS_POLL_INTERVAL": "0.5"}
    with (
        infra.isolated() as (amqp_url, database_url),
        running_system(amqp_url, database_url, tmp_path / "logs", env=env) as system,
    ):
        db = await asyncpg.connect(database_url)
        async with httpx.AsyncClient(base_url=system.gateway_url, timeout=30) as client:
            admin = await login(client, "admin", ADMIN_PASSWORD)
            carol = await new_user(client, admin, "carol", "carol-password")
            await add_simulator_accounts(
                client,
                admin,
                system,
                1,
                simulator={"api_latency": 1.5, "timings": {"boot": 0}},
                poll_interval=0.5,
                grants=("carol",),
            )
            launched = await client.post(
                "/v1/instances",
                json={"name": "once", "image": "debian-12", "cpus": 1, "memory_mb": 512},
                headers=carol,
            )
            assert launched.status_code == 202, launched.text
            instance_id = launched.json()["id"]

            async def nodes_tagged() -> int:
                return await db.fetchval(
                    """SELECT count(*) FROM simulator.nodes
                       WHERE tags->>'boreas-instance' = $1""",
                    instance_id,
                )

            # The cloud has made the node and takes 1.5 s to say so: the scheduler dies waiting.
            await wait_until(nodes_tagged, timeout=30, interval=0.02, what="the node created")
            system.kill("scheduler")
            call = await db.fetchrow(
                "SELECT status, tried FROM scheduler.cloud_calls WHERE instance_id = $1",
                instance_id,
            )
            assert call["status"] == "pending", "the scheduler heard the answer before it died"
            assert call["tried"], "the account the create went to is on record"

            system.start("scheduler", index=0)

            async def running() -> dict | None:
                got = (await client.get(f"/v1/instances/{instance_id}", headers=carol)).json()
                return got if got["state"] == "running" else None

            instance = await wait_until(running, timeout=60, what="the launch running")
            assert await nodes_tagged() == 1, "launched twice"
            assert "created by an earlier attempt" in instance["reason"]
            node_id = await db.fetchval(
                "SELECT id FROM simulator.nodes WHERE tags->>'boreas-instance' = $1", instance_id
            )
            assert instance["provider_instance_id"] == node_id
        await db.close()
