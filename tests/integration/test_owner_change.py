"""An instance given to another user (instance.owner_changed, sent by the gateway when an admin
deletes its owner with a transfer): quota moves its usage, the scheduler and the poller carry the
new owner in what they record and publish from then on.

The owner changes are published here on the real bus as the gateway publishes them; the rest is
the real stack (simulated cloud, RabbitMQ, PostgreSQL).
"""

from __future__ import annotations

import asyncio
import uuid
from contextlib import AbstractAsyncContextManager
from pathlib import Path

from services.scheduler import bootstrap as scheduler
from shared.bus import Bus
from shared.clouds.registry import BOREAS_TAG
from shared.clouds.simulator.driver import SimulatorNodeDriver
from shared.config import SchedulerSettings
from shared.events import (
    InstanceAction,
    InstanceActionRequested,
    InstanceOwnerChanged,
    InstancePlaced,
)
from shared.runtime import ServiceRuntime
from shared.services import event_source
from shared.testing import EventProbe, wait_until
from tests.integration.api import SESSION_KEY, Api
from tests.integration.publishing import connected_bus
from tests.integration.stack import (
    FAST,
    poller_runtime,
    quota_runtime,
    simulator_account,
    without_loops,
)
from tests.integration.support import settings_for

ROOT = Path(__file__).resolve().parents[2]


def gateway_bus(amqp_url: str) -> AbstractAsyncContextManager[Bus]:
    """Publishes as the gateway does."""
    return connected_bus(amqp_url, event_source("gateway"))


def given_to(instance_id: str, owner: str, previous: str, cpus: int, memory_mb: int):
    return InstanceOwnerChanged(
        instance_id=uuid.UUID(instance_id),
        owner=owner,
        previous_owner=previous,
        changed_by="admin",
        cpus=cpus,
        memory_mb=memory_mb,
    )


def usages(probe: EventProbe, owner: str) -> list[tuple[int, int, int]]:
    return [
        (e.data["usage"]["instances"], e.data["usage"]["cpus"], e.data["usage"]["memory_mb"])
        for e in probe.matching("quota.usage_changed", lambda e: e.data["owner"] == owner)
    ]


def changed_to(instance_id: str, state: str):
    return lambda e: e.subject == instance_id and e.data["new_state"] == state


async def handled(runtime: ServiceRuntime, event_id: str) -> bool:
    """Whether one of the service's consumers has recorded the event in its inbox."""
    return bool(await runtime.pool.fetchval("SELECT 1 FROM inbox WHERE event_id = $1", event_id))


async def test_quota_moves_the_usage_to_the_new_owner_once(
    api: Api, amqp_url: str, database_url: str, simulator_url: str, probe: EventProbe
) -> None:
    ann, ann_headers = await api.new_user("ann")
    ben, _ = await api.new_user("ben")
    cat, _ = await api.new_user("cat")
    await simulator_account(api, simulator_url, [ann])
    async with quota_runtime(amqp_url, database_url):
        kept = (await api.launch(ann_headers, name="kept", cpus=1, memory_mb=512)).json()["id"]
        given = (await api.launch(ann_headers, name="given", cpus=2, memory_mb=1024)).json()["id"]
        await probe.wait_for(
            "instance.launch_admitted", lambda e: e.subject in {kept, given}, count=2
        )
        await probe.wait_for(
            "quota.usage_changed",
            lambda e: e.data["owner"] == ann and e.data["usage"]["instances"] == 2,
        )

        async with gateway_bus(amqp_url) as bus:
            change = given_to(given, ben, ann, 2, 1024)
            sent = await bus.publish(change)
            await bus.publish_envelope(sent)  # the broker delivering it again
            await bus.publish(change)  # the gateway sending it again, under a new id
            # Then on to a third owner: handled after the copies (an instance's events in order).
            await bus.publish(given_to(given, cat, ben, 2, 1024))
        await probe.wait_for(
            "quota.usage_changed",
            lambda e: e.data["owner"] == cat and e.data["usage"]["instances"] == 1,
            timeout=10,
        )

    assert usages(probe, cat) == [(1, 2, 1024)]
    assert usages(probe, ben) == [(1, 2, 1024), (0, 0, 0)], "up once, down once"
    after_both = usages(probe, ann)
    assert after_both[after_both.index((2, 3, 1536)) + 1 :] == [(1, 1, 512)]


async def test_a_transfer_may_pass_the_new_owners_limits_and_refuses_their_next_launch(
    api: Api, amqp_url: str, database_url: str, simulator_url: str, probe: EventProbe
) -> None:
    dan, dan_headers = await api.new_user("dan")
    eve, eve_headers = await api.new_user("eve")
    await simulator_account(api, simulator_url, [dan, eve])
    async with quota_runtime(amqp_url, database_url):
        put = await api.client.put(
            f"/v1/quotas/{eve}",
            json={"instances": 1, "cpus": None, "memory_mb": None},
            headers=await api.admin(),
        )
        assert put.status_code == 200, put.text
        await probe.wait_for(
            "quota.usage_changed",
            lambda e: e.data["owner"] == eve and e.data["limits"]["instances"] == 1,
        )
        mine = (await api.launch(eve_headers, name="mine")).json()["id"]
        theirs = (await api.launch(dan_headers, name="theirs")).json()["id"]
        await probe.wait_for(
            "instance.launch_admitted", lambda e: e.subject in {mine, theirs}, count=2
        )

        async with gateway_bus(amqp_url) as bus:
            await bus.publish(given_to(theirs, eve, dan, 2, 2048))
        [over] = await probe.wait_for(
            "quota.usage_changed",
            lambda e: e.data["owner"] == eve and e.data["usage"]["instances"] == 2,
        )
        counted = {k: over.data["usage"][k] for k in ("instances", "cpus", "memory_mb")}
        assert counted == {"instances": 2, "cpus": 4, "memory_mb": 4096}
        assert over.data["limits"]["instances"] == 1
        await probe.wait_for(
            "quota.usage_changed",
            lambda e: e.data["owner"] == dan and e.data["usage"]["instances"] == 0,
        )

        late = (await api.launch(eve_headers, name="late")).json()["id"]
        [refused] = await probe.wait_for("instance.rejected", lambda e: e.subject == late)
        assert refused.data["reason"].startswith("instances limit 1 reached: 2 in use")


async def test_after_a_transfer_the_scheduler_and_poller_carry_the_new_owner(
    api: Api,
    amqp_url: str,
    clouds_side: tuple[ServiceRuntime, ServiceRuntime],
    simulator_url: str,
    probe: EventProbe,
) -> None:
    scheduler, poller = clouds_side
    fay, fay_headers = await api.new_user("fay")
    gus, _ = await api.new_user("gus")
    account = await simulator_account(api, simulator_url, [fay], followers=clouds_side)
    instance_id = (await api.launch(fay_headers, placement={"account": account["id"]})).json()["id"]
    [running] = await probe.wait_for(
        "instance.state_changed", changed_to(instance_id, "running"), timeout=20
    )
    assert running.data["owner"] == fay

    async with gateway_bus(amqp_url) as bus:
        await bus.publish(given_to(instance_id, gus, fay, 2, 2048))

    async def owned_by_gus() -> bool:
        placed = await scheduler.pool.fetchval(
            "SELECT owner FROM placements WHERE instance_id = $1", uuid.UUID(instance_id)
        )
        followed = await poller.pool.fetchval(
            "SELECT owner FROM instances WHERE instance_id = $1", uuid.UUID(instance_id)
        )
        return placed == followed == gus

    await wait_until(owned_by_gus, timeout=10, what="scheduler and poller follow the new owner")

    # The gateway here knows nothing of the transfer and asks as the old owner: the scheduler
    # records the call for the owner it has, and the poller reports the stop for the new one.
    stop = await api.client.post(f"/v1/instances/{instance_id}/stop", headers=fay_headers)
    assert stop.status_code == 202, stop.text
    [stopped] = await probe.wait_for(
        "instance.state_changed", changed_to(instance_id, "stopped"), timeout=20
    )
    assert stopped.data["owner"] == gus
    calls = await scheduler.pool.fetch(
        "SELECT action, owner FROM cloud_calls WHERE instance_id = $1 ORDER BY id",
        uuid.UUID(instance_id),
    )
    assert [tuple(c) for c in calls] == [("launch", fay), ("stop", gus)]


async def test_the_scheduler_gives_calls_not_yet_made_to_the_new_owner(
    amqp_url: str, database_url: str, unique: str
) -> None:
    settings = settings_for(amqp_url, database_url, SchedulerSettings, secret_key=SESSION_KEY)
    # Its handlers without its cloud worker: the calls they record stay pending.
    runtime = without_loops(scheduler.build(settings))
    runtime.service = f"sch_{unique}"
    instance_id = uuid.uuid4()
    async with runtime, gateway_bus(amqp_url) as bus:
        await runtime.pool.execute(
            """INSERT INTO placements (instance_id, owner, status, account_id,
                                       provider_instance_id)
               VALUES ($1, 'hal', 'placed', 'acct-x', 'sim-x')""",
            instance_id,
        )
        await bus.publish(
            InstanceActionRequested(
                instance_id=instance_id,
                owner="hal",
                action=InstanceAction.STOP,
                requested_by="hal",
            )
        )

        async def stop_pending() -> bool:
            return bool(
                await runtime.pool.fetchval(
                    "SELECT 1 FROM cloud_calls WHERE instance_id = $1 AND status = 'pending'",
                    instance_id,
                )
            )

        await wait_until(stop_pending, timeout=10, what="the stop recorded")
        await bus.publish(given_to(str(instance_id), "ida", "hal", 2, 2048))

        async def given() -> bool:
            owners = await runtime.pool.fetch(
                """SELECT owner FROM cloud_calls WHERE instance_id = $1
                   UNION ALL SELECT owner FROM placements WHERE instance_id = $1""",
                instance_id,
            )
            return [r["owner"] for r in owners] == ["ida", "ida"]

        await wait_until(given, timeout=10, what="the placement and the pending stop are ida's")


async def test_an_owner_change_before_the_placement_reaches_the_poller_is_kept_for_it(
    api: Api, amqp_url: str, database_url: str, simulator_url: str, probe: EventProbe
) -> None:
    jan, _ = await api.new_user("jan")
    kim = f"kim-{uuid.uuid4().hex[:8]}"
    api_key = f"k-{uuid.uuid4().hex[:8]}"
    async with poller_runtime(amqp_url, database_url) as poller:
        account = await simulator_account(
            api, simulator_url, [jan], followers=(poller,), api_key=api_key
        )
        instance_id = uuid.uuid4()
        # The node the scheduler would have created for it.
        cloud = SimulatorNodeDriver(api_key, "s3cret", endpoint=simulator_url)

        def create_node():
            cloud.ex_ensure_account({"regions": ["north", "south"], "timings": FAST})
            size = min(cloud.list_sizes(), key=lambda s: s.price)
            image = next(i for i in cloud.list_images() if i.name == "debian-12")
            return cloud.create_node(
                "boreas-race", size, image, ex_metadata={BOREAS_TAG: str(instance_id)}
            )

        node = await asyncio.to_thread(create_node)

        async with gateway_bus(amqp_url) as bus:
            change = await bus.publish(given_to(str(instance_id), kim, jan, 1, 1024))
            await wait_until(
                lambda: handled(poller, change.id), timeout=10, what="the poller took the change"
            )
            # instance.placed still names the owner at launch: the scheduler published it first.
            placed = InstancePlaced(
                instance_id=instance_id,
                owner=jan,
                account_id=account["id"],
                provider="simulator",
                provider_instance_id=str(node.id),
                region="north",
                cpus=1,
                memory_mb=1024,
            )
            await bus.publish(placed)
        [running] = await probe.wait_for(
            "instance.state_changed", changed_to(str(instance_id), "running"), timeout=20
        )
        assert running.data["owner"] == kim
