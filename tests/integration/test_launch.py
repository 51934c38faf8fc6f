"""Launching: validation, placement on granted accounts only, idempotency, and the read model."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from shared.events import InstanceFailed, InstancePlaced, InstanceRejected
from shared.testing import EventProbe, wait_until
from tests.infra import Infrastructure
from tests.integration.api import Api, gateway_settings, running_gateway
from tests.integration.publishing import connected_bus


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"cpus": 0}, "cpus"),
        ({"cpus": -2}, "cpus"),
        ({"cpus": 100_000}, "cpus"),
        ({"cpus": "two"}, "cpus"),
        ({"memory_mb": 1}, "memory_mb"),
        ({"memory_mb": 10**12}, "memory_mb"),
        ({"name": "Web_1"}, "name"),
        ({"name": "-web"}, "name"),
        ({"name": "x" * 64}, "name"),
        ({"image": "../../etc/passwd"}, "image"),
        ({"image": ""}, "image"),
        ({"placement": {"region": "north; drop table"}}, "placement.region"),
        ({"placement": {"zone": "a"}}, "placement.zone"),
        ({"owner": "someone-else"}, "owner"),
    ],
)
async def test_invalid_launches_are_422_problems_naming_the_field(
    api: Api, change: dict, field: str
) -> None:
    _, alice = await api.new_user("alice")
    await api.new_account(["*"])
    response = await api.launch(alice, **change)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"].startswith(f"body.{field}")


async def test_placement_is_limited_to_granted_accounts(infra: Infrastructure) -> None:
    # A database of its own: elsewhere in the session, accounts granted to '*' reach everyone.
    with infra.isolated() as (amqp_url, database_url):
        async with running_gateway(gateway_settings(amqp_url, database_url)) as api:
            await _placement_is_limited_to_granted_accounts(api)


async def _placement_is_limited_to_granted_accounts(api: Api) -> None:
    alice_name, alice = await api.new_user("alice")
    _, loner = await api.new_user("loner")
    granted = await api.new_account([alice_name])
    other = await api.new_account([])

    nothing = await api.launch(loner)
    assert nothing.status_code == 422
    assert "No provider account is granted to you" in nothing.json()["detail"]

    for placement, complaint in [
        ({"account": other["id"]}, "is granted to you"),
        ({"account": other["name"]}, "is granted to you"),
        ({"provider": "ec2"}, "on provider 'ec2'"),
        ({"account": granted["id"], "provider": "ec2"}, "on provider 'ec2'"),
        ({"account": granted["id"], "region": "west"}, "offers region 'west'"),
    ]:
        refused = await api.launch(alice, placement=placement)
        assert refused.status_code == 422, placement
        assert complaint in refused.json()["detail"], (placement, refused.json())

    for placement in (
        {"account": granted["id"]},
        {"account": granted["name"], "region": "south"},
        {"provider": "simulator"},
        {},
    ):
        assert (await api.launch(alice, placement=placement)).status_code == 202, placement


async def test_launch_publishes_launch_requested_after_commit(api: Api, probe: EventProbe) -> None:
    alice_name, alice = await api.new_user("alice")
    await api.new_account(["*"])
    response = await api.launch(alice, placement={"region": "north"})
    assert response.status_code == 202
    instance = response.json()
    assert instance["state"] == "requested" and instance["owner"] == alice_name
    assert response.headers["location"] == f"/v1/instances/{instance['id']}"

    [event] = await probe.wait_for(
        "instance.launch_requested", lambda e: e.subject == instance["id"]
    )
    assert event.type == "boreas.instance.launch_requested.v1"
    assert event.source == "boreas/gateway"
    assert event.data["owner"] == alice_name
    assert event.data["placement"]["region"] == "north"
    assert (event.data["cpus"], event.data["memory_mb"]) == (2, 2048)


async def test_idempotency_key_same_body_same_instance_other_body_422(
    api: Api, probe: EventProbe
) -> None:
    _, alice = await api.new_user("alice")
    await api.new_account(["*"])
    key = {"Idempotency-Key": f"launch-{uuid.uuid4()}"}
    first = await api.launch({**alice, **key}, name="api-1")
    again = await api.launch({**alice, **key}, name="api-1")
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]

    racing = await asyncio.gather(
        *(
            api.launch({**alice, "Idempotency-Key": "race-" + key["Idempotency-Key"]})
            for _ in range(8)
        )
    )
    assert {r.status_code for r in racing} == {202}
    assert len({r.json()["id"] for r in racing}) == 1

    different = await api.launch({**alice, **key}, name="api-2")
    assert different.status_code == 422
    assert "Idempotency-Key was used with a different request body" in different.json()["detail"]

    await probe.wait_for("instance.launch_requested", lambda e: e.subject == racing[0].json()["id"])
    assert (
        len(probe.matching("instance.launch_requested", lambda e: e.subject == first.json()["id"]))
        == 1
    )
    assert (
        len(
            probe.matching(
                "instance.launch_requested", lambda e: e.subject == racing[0].json()["id"]
            )
        )
        == 1
    )


async def test_keys_are_per_user(api: Api) -> None:
    _, alice = await api.new_user("alice")
    _, bob = await api.new_user("bob")
    await api.new_account(["*"])
    key = {"Idempotency-Key": "the-same-key"}
    a = await api.launch({**alice, **key})
    b = await api.launch({**bob, **key})
    assert a.json()["id"] != b.json()["id"]


async def test_read_model_follows_rejection_placement_and_failure(api: Api, amqp_url: str) -> None:
    alice_name, alice = await api.new_user("alice")
    await api.new_account(["*"])
    rejected, placed, failed = [(await api.launch(alice)).json() for _ in range(3)]
    async with connected_bus(amqp_url) as bus:
        await bus.publish(
            InstanceRejected(
                instance_id=rejected["id"], owner=alice_name, reason="instances limit 5 reached"
            )
        )
        await bus.publish(
            InstancePlaced(
                instance_id=placed["id"],
                owner=alice_name,
                account_id="acct-9",
                provider="simulator",
                provider_instance_id="sim-77",
                region="north",
                reason="most headroom",
            )
        )
        await bus.publish(
            InstanceFailed(
                instance_id=failed["id"],
                owner=alice_name,
                reason="every candidate refused",
                attempts=["acct-1: capacity"],
            )
        )

    async def state_of(instance: dict) -> dict:
        return (await api.client.get(f"/v1/instances/{instance['id']}", headers=alice)).json()

    async def settled() -> bool:
        states = [(await state_of(i))["state"] for i in (rejected, placed, failed)]
        return states == ["rejected", "pending", "error"]

    await wait_until(settled, timeout=10, what="read model updated from events")
    assert (await state_of(rejected))["reason"] == "instances limit 5 reached"
    shown = await state_of(placed)
    assert (
        shown["account_id"],
        shown["provider"],
        shown["provider_instance_id"],
        shown["region"],
    ) == ("acct-9", "simulator", "sim-77", "north")
    assert (await state_of(failed))["reason"] == "every candidate refused"


async def test_listing_pages_with_a_cursor(api: Api) -> None:
    _, alice = await api.new_user("alice")
    await api.new_account(["*"])
    launched = [(await api.launch(alice, name=f"n{i}")).json()["id"] for i in range(7)]
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await api.client.get("/v1/instances", params=params, headers=alice)).json()
        seen += [i["id"] for i in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == list(reversed(launched))
    forged = await api.client.get("/v1/instances", params={"cursor": "Z2FyYmFnZQ"}, headers=alice)
    assert forged.status_code == 400
    assert forged.json()["detail"] == "The cursor is not one this API gave out."
    malformed = await api.client.get("/v1/instances", params={"cursor": "x!"}, headers=alice)
    assert malformed.status_code == 422


async def test_actions_refuse_impossible_transitions(api: Api) -> None:
    _, alice = await api.new_user("alice")
    await api.new_account(["*"])
    instance = (await api.launch(alice)).json()
    stop = await api.client.post(f"/v1/instances/{instance['id']}/stop", headers=alice)
    assert stop.status_code == 409
    assert stop.json()["detail"] == "Cannot stop an instance that is requested."
    gone = await api.client.delete(f"/v1/instances/{instance['id']}", headers=alice)
    assert gone.status_code == 202 and gone.json()["state"] == "terminating"
    again = await api.client.delete(f"/v1/instances/{instance['id']}", headers=alice)
    assert again.status_code == 202 and again.json()["state"] == "terminating"
