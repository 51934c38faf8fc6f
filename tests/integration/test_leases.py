"""Leases end to end on the simulated cloud: a launch with a short lease warns its owner's webhook
(``instance.lease_expiring``), then ends (``instance.lease_expired``) in that order, and its
instance is stopped or terminated as the owner's lease policy says; the same with the scheduler
restarted between the warning and the expiry. Then the lease loop's rows shared by two
replicas: each warning and expiry goes out once.

Everything runs in-process on the real bus and database: gateway, quota, scheduler, poller and
notifier, with a webhook receiver of the test's own."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from services.scheduler import repository
from services.scheduler.lease_checks import check_leases
from shared.events import Lease
from shared.runtime import ServiceRuntime
from shared.testing import EventProbe, wait_until
from tests.integration.api import Api
from tests.integration.clouds import api_shows, tenant
from tests.integration.stack import (
    poller_runtime,
    quota_runtime,
    scheduler_runtime,
    without_loops,
)
from tests.integration.webhooks import (
    Receiver,
    notifier_knows,
    notifier_runtime,
    notifier_settings,
)

LEASE_TOPICS = ["instance.lease_expiring", "instance.lease_expired"]


@dataclass
class Stack:
    api: Api
    amqp_url: str
    database_url: str
    receiver: Receiver
    services: AsyncExitStack
    scheduler: ServiceRuntime
    poller: ServiceRuntime
    notifier: ServiceRuntime

    async def restart_scheduler(self, before: datetime) -> None:
        """Stop the scheduler (asserting it stopped before ``before``) and start another."""
        await self.scheduler.__aexit__(None, None, None)
        assert datetime.now(UTC) < before, "the scheduler stopped too late for the test"
        self.scheduler = scheduler_runtime(self.amqp_url, self.database_url)
        await self.scheduler.__aenter__()

    def lease_messages(self, instance_id: str) -> list[dict]:
        """The lease events of the instance the receiver accepted, each once, in arrival order."""
        return [
            r.event for r in self.receiver.deduped("/hook") if r.event["subject"] == instance_id
        ]


@pytest.fixture
async def stack(api: Api, amqp_url: str, database_url: str) -> AsyncIterator[Stack]:
    receiver = Receiver()
    await receiver.start()
    try:
        async with AsyncExitStack() as services:
            await services.enter_async_context(quota_runtime(amqp_url, database_url))
            poller = await services.enter_async_context(poller_runtime(amqp_url, database_url))
            notifier = await services.enter_async_context(
                notifier_runtime(notifier_settings(amqp_url, database_url))
            )
            # Entered by hand, so that a test can stop it and start another.
            scheduler = scheduler_runtime(amqp_url, database_url)
            await scheduler.__aenter__()
            stack = Stack(
                api, amqp_url, database_url, receiver, services, scheduler, poller, notifier
            )
            try:
                yield stack
            finally:
                await stack.scheduler.__aexit__(None, None, None)
    finally:
        await receiver.stop()


async def leased_tenant(
    stack: Stack, simulator_url: str, **policy: object
) -> tuple[str, dict, dict]:
    """A user with a simulated account, the lease ``policy``, and a webhook for lease events
    that the notifier knows: (name, headers, account)."""
    api = stack.api
    name, headers, account = await tenant(api, simulator_url, (stack.scheduler, stack.poller))
    response = await api.client.put(
        f"/v1/lease-policies/{name}", json=policy, headers=await api.admin()
    )
    assert response.status_code == 200, response.text
    hook = await api.client.post(
        "/v1/webhooks",
        json={"url": stack.receiver.url("/hook"), "topics": LEASE_TOPICS},
        headers=headers,
    )
    assert hook.status_code == 201, hook.text
    await wait_until(lambda: notifier_knows(stack.notifier, hook.json()["id"]), timeout=10)
    return name, headers, account


async def launch_with_lease(
    stack: Stack, headers: dict, account: dict, seconds: int
) -> tuple[str, datetime]:
    launched = await stack.api.launch(
        headers, cpus=1, memory_mb=512, lease_seconds=seconds, placement={"account": account["id"]}
    )
    assert launched.status_code == 202, launched.text
    instance = launched.json()
    assert instance["expires_at"] is not None, instance
    return instance["id"], datetime.fromisoformat(instance["expires_at"])


async def received(stack: Stack, instance_id: str, count: int, timeout: float) -> list[dict]:
    async def arrived() -> list[dict] | None:
        got = stack.lease_messages(instance_id)
        return got if len(got) >= count else None

    return await wait_until(arrived, timeout=timeout, what=f"{count} lease events at the webhook")


def check_in_order(messages: list[dict], on_expiry: str, expires_at: datetime) -> None:
    assert [m["type"] for m in messages] == [
        "boreas.instance.lease_expiring.v1",
        "boreas.instance.lease_expired.v1",
    ]
    for message in messages:
        assert message["data"]["on_expiry"] == on_expiry
        assert datetime.fromisoformat(message["data"]["expires_at"]) == expires_at
    # Each at its time, by the scheduler's clock (the warning 2 s before, or more).
    warned_at, expired_at = (datetime.fromisoformat(m["time"]) for m in messages)
    assert warned_at <= expired_at
    assert expired_at >= expires_at


async def the_lease_asked_for(probe: EventProbe, instance_id: str, action: str) -> None:
    [asked] = await probe.wait_for(
        "instance.action_requested",
        lambda e: e.subject == instance_id and e.data["requested_by"] == "lease",
        timeout=20,
    )
    assert asked.data["action"] == action
    assert asked.data["provider_instance_id"].startswith("sim-")  # placed before it ended


async def test_a_lease_warns_then_ends_and_terminates_its_instance(
    stack: Stack, simulator_url: str, probe: EventProbe
) -> None:
    _, headers, account = await leased_tenant(
        stack, simulator_url, on_expiry="terminate", warn_seconds=2
    )
    instance_id, expires_at = await launch_with_lease(stack, headers, account, seconds=6)
    await api_shows(stack.api, headers, instance_id, "running")

    messages = await received(stack, instance_id, 2, timeout=30)

    check_in_order(messages, "terminate", expires_at)
    warned_at = datetime.fromisoformat(messages[0]["time"])
    assert warned_at >= expires_at - timedelta(seconds=2)
    await the_lease_asked_for(probe, instance_id, "terminate")
    await api_shows(stack.api, headers, instance_id, "terminated")


async def test_a_lease_ends_after_the_scheduler_restarted_between_warning_and_expiry(
    stack: Stack, simulator_url: str, probe: EventProbe
) -> None:
    _, headers, account = await leased_tenant(
        stack, simulator_url, on_expiry="stop", warn_seconds=6
    )
    instance_id, expires_at = await launch_with_lease(stack, headers, account, seconds=10)
    await api_shows(stack.api, headers, instance_id, "running")

    [warning] = await received(stack, instance_id, 1, timeout=20)
    assert warning["type"] == "boreas.instance.lease_expiring.v1"
    await stack.restart_scheduler(before=expires_at)

    messages = await received(stack, instance_id, 2, timeout=30)
    check_in_order(messages, "stop", expires_at)
    await the_lease_asked_for(probe, instance_id, "stop")
    await api_shows(stack.api, headers, instance_id, "stopped")
    # Warned once and ended once, across the restart.
    about = [e.topic for e in probe.received if e.subject == instance_id]
    assert about.count("instance.lease_expiring") == 1
    assert about.count("instance.lease_expired") == 1


async def test_an_extension_after_expiry_warns_and_ends_the_lease_again(
    stack: Stack, simulator_url: str, probe: EventProbe
) -> None:
    """Stopped at its first expiry; extended, it warns and ends again, and the second stop is
    not asked of an instance already stopped."""
    _, headers, account = await leased_tenant(
        stack, simulator_url, on_expiry="stop", warn_seconds=2
    )
    instance_id, expires_at = await launch_with_lease(stack, headers, account, seconds=6)
    await api_shows(stack.api, headers, instance_id, "running")
    check_in_order(await received(stack, instance_id, 2, timeout=30), "stop", expires_at)
    await the_lease_asked_for(probe, instance_id, "stop")
    await api_shows(stack.api, headers, instance_id, "stopped")

    extended = await stack.api.client.post(
        f"/v1/instances/{instance_id}/extend", json={"seconds": 3}, headers=headers
    )
    assert extended.status_code == 200, extended.text
    new_end = datetime.fromisoformat(extended.json()["expires_at"])
    assert new_end > expires_at

    messages = await received(stack, instance_id, 4, timeout=30)
    check_in_order(messages[2:], "stop", new_end)
    await probe.wait_for(
        "instance.lease_expired",
        lambda e: (
            e.subject == instance_id and e.data["expires_at"] == messages[3]["data"]["expires_at"]
        ),
        timeout=10,
    )
    asked = probe.matching(
        "instance.action_requested",
        lambda e: e.subject == instance_id and e.data["requested_by"] == "lease",
    )
    assert len(asked) == 1, "no second stop of a stopped instance"


async def test_a_lease_is_kept_whatever_order_its_events_come_in(
    amqp_url: str, database_url: str
) -> None:
    """An extension may come before the launch (it waited for approval); an ended lease stays
    ended; an extension to an earlier end, or a copy, changes nothing."""
    now = datetime.now(UTC).replace(microsecond=0)
    admitted = Lease(expires_at=now + timedelta(hours=1), on_expiry="stop", warn_seconds=600)
    early, ended = uuid.uuid4(), uuid.uuid4()
    async with without_loops(scheduler_runtime(amqp_url, database_url)) as scheduler:
        async with scheduler.pool.acquire() as conn, conn.transaction():
            assert await repository.extend_lease(conn, early, "ann", now + timedelta(hours=2))
            await repository.add_lease(conn, early, "ann", admitted)
            await repository.add_lease(conn, early, "ann", admitted)  # a copy
            assert not await repository.extend_lease(conn, early, "ann", now + timedelta(hours=2))
            await repository.end_lease(conn, ended, "ann")
            await repository.add_lease(conn, ended, "ann", admitted)
            assert not await repository.extend_lease(conn, ended, "ann", now + timedelta(hours=3))
            rows = {
                r["instance_id"]: r
                for r in await conn.fetch(
                    "SELECT * FROM leases WHERE instance_id = ANY($1)", [early, ended]
                )
            }
    assert rows[early]["expires_at"] == now + timedelta(hours=2)
    assert (rows[early]["on_expiry"], rows[early]["warn_seconds"]) == ("stop", 600)
    assert rows[early]["due_at"] == now + timedelta(hours=2) - timedelta(seconds=600)
    assert rows[ended]["ended"] and rows[ended]["due_at"] is None


async def test_replicas_share_due_leases_and_send_each_event_once(
    amqp_url: str, database_url: str, probe: EventProbe
) -> None:
    """Two replicas' lease checks, many rounds at once, over leases due now: each lease warns
    and ends exactly once, the warning first."""
    now = datetime.now(UTC)
    # Launches never placed (no account): the action asked for at expiry only cancels them.
    leases = {
        uuid.uuid4(): Lease(expires_at=now, on_expiry="terminate", warn_seconds=30)
        for _ in range(30)
    }
    async with (
        without_loops(scheduler_runtime(amqp_url, database_url)) as one,
        without_loops(scheduler_runtime(amqp_url, database_url)) as two,
    ):
        async with one.pool.acquire() as conn, conn.transaction():
            for instance_id, lease in leases.items():
                await repository.add_lease(conn, instance_id, "racer", lease)

        def clock() -> datetime:
            return now + timedelta(seconds=1)

        await asyncio.gather(
            *(
                check_leases(runtime.pool, clock, runtime.outbox.wake)
                for _ in range(5)
                for runtime in (one, two)
            )
        )
        ids = {str(i) for i in leases}
        await probe.wait_for(
            "instance.lease_expired", lambda e: e.subject in ids, count=len(ids), timeout=15
        )
        await probe.wait_for(
            "instance.action_requested", lambda e: e.subject in ids, count=len(ids), timeout=15
        )
        for subject in ids:
            topics = [e.topic for e in probe.received if e.subject == subject]
            assert topics[:3] == [
                "instance.lease_expiring",
                "instance.lease_expired",
                "instance.action_requested",
            ], topics
            assert topics.count("instance.lease_expiring") == 1
            assert topics.count("instance.lease_expired") == 1
        # Nothing is due any more: no later round sends anything again.
        left = await one.pool.fetchval(
            "SELECT count(*) FROM leases WHERE instance_id = ANY($1) AND due_at IS NOT NULL",
            list(leases),
        )
        assert left == 0
