"""The scheduler on the real bus, database and simulated cloud: placement, failover, actions."""

from __future__ import annotations

import uuid

from shared.events import InstanceLaunchAdmitted, Placement
from shared.runtime import ServiceRuntime
from shared.testing import EventProbe, wait_until
from tests.integration.api import Api
from tests.integration.publishing import connected_bus
from tests.integration.stack import FAST, registered_account, simulator_account


async def test_launch_is_placed_on_the_simulated_cloud(
    api: Api, scheduler: ServiceRuntime, simulator_url: str, probe: EventProbe
) -> None:
    alice_name, alice = await api.new_user("alice")
    account = await simulator_account(api, simulator_url, [alice_name], followers=(scheduler,))
    launched = await api.launch(alice, placement={"account": account["id"], "region": "south"})
    instance_id = launched.json()["id"]

    [placed] = await probe.wait_for(
        "instance.placed", lambda e: e.subject == instance_id, timeout=15
    )
    assert placed.data["account_id"] == account["id"]
    assert placed.data["provider"] == "simulator"
    assert placed.data["region"] == "south"
    assert placed.data["provider_instance_id"].startswith("sim-")
    assert placed.data["reason"].startswith("first choice of 1: sim.medium at 0.04/h")
    assert placed.data["price_per_hour"] == 0.04  # the simulated cloud's own price

    async def shown() -> dict | None:
        got = (await api.client.get(f"/v1/instances/{instance_id}", headers=alice)).json()
        return got if got["state"] == "pending" else None

    instance = await wait_until(shown, timeout=10, what="gateway shows the placement")
    assert instance["provider_instance_id"] == placed.data["provider_instance_id"]


async def test_failing_account_falls_over_to_the_next(
    api: Api, scheduler: ServiceRuntime, simulator_url: str, probe: EventProbe
) -> None:
    alice_name, alice = await api.new_user("alice")
    tag = uuid.uuid4().hex[:6]
    broken = await simulator_account(
        api,
        simulator_url,
        [alice_name],
        name=f"a-broken-{tag}",
        followers=(scheduler,),
        create_failure_rate=1.0,
    )
    working = await simulator_account(
        api, simulator_url, [alice_name], name=f"b-working-{tag}", followers=(scheduler,)
    )
    instance_id = (await api.launch(alice, placement={"provider": "simulator"})).json()["id"]

    [placed] = await probe.wait_for(
        "instance.placed", lambda e: e.subject == instance_id, timeout=15
    )
    assert placed.data["account_id"] == working["id"]
    assert "earlier ones failed" in placed.data["reason"]
    assert broken["id"] != working["id"]


async def test_nothing_fits_fails_with_the_reasons(
    api: Api, scheduler: ServiceRuntime, simulator_url: str, probe: EventProbe
) -> None:
    alice_name, alice = await api.new_user("alice")
    account = await simulator_account(api, simulator_url, [alice_name], followers=(scheduler,))
    response = await api.launch(alice, cpus=200, placement={"account": account["id"]})
    instance_id = response.json()["id"]
    [failed] = await probe.wait_for(
        "instance.failed", lambda e: e.subject == instance_id, timeout=15
    )
    assert any("no size with 200 cpus" in a for a in failed.data["attempts"])
    # The owner reads each tried account's cause in the instance itself.
    expected = f"no candidate account could launch it: {account['name']}: no size with 200 cpus"
    assert failed.data["reason"].startswith(expected)

    async def shown() -> str:
        got = await api.client.get(f"/v1/instances/{instance_id}", headers=alice)
        return got.json()["reason"] or ""

    assert (await wait_until(shown, timeout=10, what="the reason shown")).startswith(expected)


async def test_terminating_before_placement_ends_the_instance(
    api: Api, scheduler: ServiceRuntime, probe: EventProbe
) -> None:
    """Launch and terminate race on two queues; either order must end in `terminated`."""
    alice_name, alice = await api.new_user("alice")
    await api.new_account([alice_name])  # its cloud is unreachable: placement cannot succeed
    instance = (await api.launch(alice)).json()
    await api.client.delete(f"/v1/instances/{instance['id']}", headers=alice)
    [failed] = await probe.wait_for(
        "instance.failed", lambda e: e.subject == instance["id"], timeout=15
    )
    assert failed.data["reason"] == "terminated before it was placed" or failed.data[
        "reason"
    ].startswith("no candidate account could launch it")

    async def ended() -> bool:
        got = await api.client.get(f"/v1/instances/{instance['id']}", headers=alice)
        return got.json()["state"] == "terminated"

    await wait_until(ended, timeout=10, what="the instance shows terminated")


async def test_each_catalog_read_is_published_with_the_accounts_prices(
    api: Api, scheduler: ServiceRuntime, simulator_url: str, probe: EventProbe
) -> None:
    """Read as soon as the account is known (before any launch); config.prices wins over the
    cloud's own prices, and placement takes the cheapest size at those prices."""
    alice_name, alice = await api.new_user("alice")
    account = await registered_account(
        api,
        {
            "name": f"priced-{uuid.uuid4().hex[:8]}",
            "provider": "simulator",
            "credentials": {"api_key": f"k-{uuid.uuid4().hex[:8]}", "api_secret": "s3cret"},
            "config": {
                "endpoint": simulator_url,
                "regions": ["north"],
                # A negotiated rate: the large size is cheaper here than the medium one.
                "prices": {"sim.medium": 0.5, "sim.large": 0.12},
                "simulator": {"timings": FAST},
            },
            "grants": [alice_name],
        },
        (scheduler,),
    )
    [read] = await probe.wait_for(
        "provider_account.catalog_read", lambda e: e.data["account_id"] == account["id"], timeout=15
    )
    assert read.data["revision"] == account["revision"]
    prices = {s["id"]: s["price_per_hour"] for s in read.data["sizes"]}
    assert prices == {"sim.small": 0.01, "sim.medium": 0.5, "sim.large": 0.12, "sim.xlarge": 0.64}
    assert {"id": "sim.large", "cpus": 4, "memory_mb": 16384, "price_per_hour": 0.12} in read.data[
        "sizes"
    ]
    assert read.data["regions"] == ["north"]

    launched = await api.launch(alice, cpus=2, memory_mb=2048, placement={"account": account["id"]})
    instance_id = launched.json()["id"]
    [placed] = await probe.wait_for(
        "instance.placed", lambda e: e.subject == instance_id, timeout=15
    )
    assert placed.data["price_per_hour"] == 0.12
    assert placed.data["reason"] == f"first choice of 1: sim.large at 0.12/h on {account['name']}"
    # The launch's read came from the scheduler's memory: one read published for the account.
    assert (
        len(
            probe.matching(
                "provider_account.catalog_read", lambda e: e.data["account_id"] == account["id"]
            )
        )
        == 1
    )


async def test_a_size_dearer_than_the_admitted_price_is_not_taken(
    api: Api, scheduler: ServiceRuntime, simulator_url: str, probe: EventProbe, amqp_url: str
) -> None:
    """Quota admitted the launch at a price (published here as quota would): an account whose
    fitting size costs more is no offer, and the reason names both prices."""
    alice_name, _ = await api.new_user("alice")
    account = await simulator_account(api, simulator_url, [alice_name], followers=(scheduler,))
    instance_id = uuid.uuid4()
    async with connected_bus(amqp_url, source="boreas/quota") as bus:
        await bus.publish(
            InstanceLaunchAdmitted(
                instance_id=instance_id,
                owner=alice_name,
                name="thrifty",
                image="debian-12",
                cpus=2,
                memory_mb=2048,
                placement=Placement(account=account["id"]),
                price_per_hour=0.03,
            )
        )
    [failed] = await probe.wait_for(
        "instance.failed", lambda e: e.subject == str(instance_id), timeout=15
    )
    assert failed.data["attempts"] == [
        f"{account['name']}: sim.medium costs 0.04/h, more than the 0.03/h the launch was "
        "admitted at"
    ]
