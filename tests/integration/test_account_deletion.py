"""A deleted provider account (provider_account.changed with deleted, at a higher revision): the
poller stops polling it, the scheduler places nothing there, and an older revision arriving late
does not bring it back.

The deletion is published here on the real bus as the gateway publishes it; the rest is the real
stack (simulated cloud, RabbitMQ, PostgreSQL).
"""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx

from shared.events import ProviderAccountChanged, SealedSecret
from shared.runtime import ServiceRuntime
from shared.testing import EventProbe, wait_until
from tests.integration.api import Api
from tests.integration.publishing import connected_bus
from tests.integration.stack import (
    simulator_account,
)


async def polls(poller: ServiceRuntime, account_id: str) -> int:
    return await poller.pool.fetchval(
        "SELECT count(*) FROM polls WHERE account_id = $1 AND ok", account_id
    )


async def as_announced(scheduler: ServiceRuntime, account_id: str) -> ProviderAccountChanged:
    """The account's state as the gateway last announced it (the scheduler's copy of it)."""
    row = await scheduler.pool.fetchrow("SELECT * FROM accounts WHERE id = $1", account_id)
    return ProviderAccountChanged(
        account_id=row["id"],
        name=row["name"],
        provider=row["provider"],
        config=json.loads(row["config"]),
        grants=list(row["grants"]),
        credentials=SealedSecret.model_validate_json(row["credentials"]),
        revision=row["revision"],
    )


async def handled_by(services: tuple[ServiceRuntime, ...], event_id: str) -> bool:
    for service in services:
        if not await service.pool.fetchval("SELECT 1 FROM inbox WHERE event_id = $1", event_id):
            return False
    return True


async def test_a_deleted_account_is_neither_polled_nor_chosen_and_stays_deleted(
    api: Api,
    amqp_url: str,
    scheduler: ServiceRuntime,
    steady_poller: Callable[..., ServiceRuntime],
    simulator_url: str,
    probe: EventProbe,
) -> None:
    lea, lea_headers = await api.new_user("lea")
    async with steady_poller() as poller:
        followers = (scheduler, poller)

        async def launch_on(placement: dict) -> httpx.Response:
            return await api.launch(lea_headers, placement=placement)

        doomed = await simulator_account(api, simulator_url, [lea], followers=followers)
        kept = await simulator_account(api, simulator_url, [lea], followers=followers)

        async def both_polled() -> bool:
            return await polls(poller, doomed["id"]) >= 2 and await polls(poller, kept["id"]) >= 2

        await wait_until(both_polled, timeout=20, what="both accounts polled")

        announced = await as_announced(scheduler, doomed["id"])
        deletion = announced.model_copy(
            update={"revision": announced.revision + 1, "deleted": True}
        )
        async with connected_bus(amqp_url, "boreas/gateway") as bus:
            deleted = await bus.publish(deletion)
            await wait_until(
                lambda: handled_by(followers, deleted.id), timeout=10, what="deletion recorded"
            )
            # A poll under way when the deletion arrived may still finish; none starts after it.
            polled_until_deletion = await polls(poller, doomed["id"]) + 1

            refused = (await launch_on({"account": doomed["id"]})).json()["id"]
            [failed] = await probe.wait_for(
                "instance.failed", lambda e: e.subject == refused, timeout=15
            )
            assert failed.data["reason"] == (
                "no account granted to the owner matches the placement"
            )
            elsewhere = (await launch_on({"provider": "simulator"})).json()["id"]
            [placed] = await probe.wait_for(
                "instance.placed", lambda e: e.subject == elsewhere, timeout=15
            )
            assert placed.data["account_id"] == kept["id"]

            # The revision before the deletion, arriving late.
            stale = await bus.publish(announced)
            await wait_until(
                lambda: handled_by(followers, stale.id), timeout=10, what="late revision handled"
            )

        again = (await launch_on({"account": doomed["id"]})).json()["id"]
        [failed_again] = await probe.wait_for(
            "instance.failed", lambda e: e.subject == again, timeout=15
        )
        assert failed_again.data["reason"] == failed.data["reason"]

        kept_since = await polls(poller, kept["id"])

        async def kept_polled_on() -> bool:
            return await polls(poller, kept["id"]) >= kept_since + 4

        await wait_until(kept_polled_on, timeout=20, what="the other account polled on")
        assert await polls(poller, doomed["id"]) <= polled_until_deletion
