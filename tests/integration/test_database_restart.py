"""A PostgreSQL restart while launches are under way: polling resumes on its own, no background
loop gives up, and every accepted launch reaches running.

This restarts the machine's real PostgreSQL (it is back before the test ends).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from shared.runtime import ServiceRuntime
from shared.testing import wait_until
from tests.infra import Infrastructure
from tests.integration.api import Api
from tests.integration.clouds import tenant

pytestmark = pytest.mark.chaos

COMEBACK = 90.0


async def _launch_all(api: Api, headers: dict, account_id: str, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        response = await api.launch(headers, placement={"account": account_id})
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    return ids


async def test_polling_resumes_and_every_launch_runs_after_a_postgresql_restart(
    api: Api,
    clouds_side: tuple[ServiceRuntime, ServiceRuntime],
    simulator_url: str,
    infra: Infrastructure,
) -> None:
    scheduler, poller = clouds_side
    _, headers, account = await tenant(
        api, simulator_url, clouds_side, "dora", timings={"boot": 1.0}
    )
    before = await _launch_all(api, headers, account["id"], 10)

    await asyncio.to_thread(infra.postgres, "restart")
    restarted_at = datetime.now(UTC)

    async def accepting() -> bool:
        return (await api.client.get("/readyz")).status_code == 200

    await wait_until(accepting, timeout=COMEBACK, what="the gateway ready again")
    after = await _launch_all(api, headers, account["id"], 10)

    async def all_running() -> bool:
        listed = await api.client.get("/v1/instances?limit=100", headers=headers)
        states = {i["id"]: i["state"] for i in listed.json()["items"]}
        return all(states.get(i) == "running" for i in before + after)

    await wait_until(all_running, timeout=COMEBACK, what="every launch running")

    async def polled_since_restart() -> bool:
        return bool(
            await poller.pool.fetchval(
                "SELECT count(*) FROM polls WHERE account_id = $1 AND ok AND at > $2",
                account["id"],
                restarted_at,
            )
        )

    await wait_until(polled_since_restart, timeout=30, what="polls after the restart")
    for service in (scheduler, poller):
        assert not service.fatal.is_set(), f"{service.service} gave a loop up"
