"""Ownership: every instance route, each user against the other's instance (404) and their own."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from shared.bus import Bus
from shared.events import InstancePlaced, InstanceState, InstanceStateChanged
from shared.testing import EventProbe, wait_until
from tests.integration.api import Api
from tests.integration.publishing import connected_bus


async def move_to(api: Api, bus: Bus, instance: dict, state: InstanceState, owner: dict) -> None:
    """Report a state as the poller would, and wait until the gateway's read model shows it."""
    await bus.publish(
        InstanceStateChanged(
            instance_id=instance["id"],
            owner=instance["owner"],
            account_id="acct",
            provider="simulator",
            provider_instance_id="sim-1",
            old_state=None,
            new_state=state,
            cpus=instance["cpus"],
            memory_mb=instance["memory_mb"],
            observed_at=datetime.now(UTC),
        )
    )

    async def shows() -> bool:
        got = await api.client.get(f"/v1/instances/{instance['id']}", headers=owner)
        return got.json()["state"] == state.value

    await wait_until(shows, timeout=10, what=f"instance {state.value}")


async def test_each_user_reaches_only_their_own_instance(
    api: Api, amqp_url: str, probe: EventProbe
) -> None:
    alice_name, alice = await api.new_user("alice")
    bob_name, bob = await api.new_user("bob")
    await api.new_account([alice_name, bob_name])
    mine = (await api.launch(alice, name="alices")).json()
    theirs = (await api.launch(bob, name="bobs")).json()
    async with connected_bus(amqp_url, "boreas/poller") as bus:
        await bus.publish(
            InstancePlaced(
                instance_id=mine["id"],
                owner=alice_name,
                account_id="acct",
                provider="simulator",
                provider_instance_id="sim-1",
                region="north",
            )
        )
        await move_to(api, bus, mine, InstanceState.RUNNING, alice)
        await move_to(api, bus, theirs, InstanceState.RUNNING, bob)

        # (method, path suffix, state the instance must be in for the owner to succeed)
        routes = [
            ("GET", "", InstanceState.RUNNING, 200),
            ("POST", "/stop", InstanceState.RUNNING, 202),
            ("POST", "/start", InstanceState.STOPPED, 202),
            ("POST", "/reboot", InstanceState.RUNNING, 202),
            ("DELETE", "", InstanceState.RUNNING, 202),
        ]
        for method, suffix, needed, success in routes:
            await move_to(api, bus, mine, needed, alice)
            await move_to(api, bus, theirs, needed, bob)
            for caller, target in ((alice, theirs), (bob, mine)):
                denied = await api.client.request(
                    method, f"/v1/instances/{target['id']}{suffix}", headers=caller
                )
                assert denied.status_code == 404, (method, suffix, denied.text)
                assert denied.json()["detail"] == "There is no such instance."
            for owner, target in ((alice, mine), (bob, theirs)):
                allowed = await api.client.request(
                    method, f"/v1/instances/{target['id']}{suffix}", headers=owner
                )
                assert allowed.status_code == success, (method, suffix, allowed.text)
                assert allowed.json()["id"] == target["id"]

    # Only the owners' own requests reached the bus.
    requests = await probe.wait_for(
        "instance.action_requested", lambda e: e.subject in (mine["id"], theirs["id"]), count=8
    )
    assert all(
        (e.data["requested_by"] == alice_name) == (e.subject == mine["id"]) for e in requests
    )


async def test_lists_show_only_your_own_and_admins_see_everything(api: Api) -> None:
    _alice_name, alice = await api.new_user("alice")
    bob_name, bob = await api.new_user("bob")
    await api.new_account(["*"])
    a = (await api.launch(alice)).json()
    b = (await api.launch(bob)).json()

    alices = (await api.client.get("/v1/instances", headers=alice)).json()["items"]
    assert [i["id"] for i in alices] == [a["id"]]
    peeking = await api.client.get("/v1/instances", params={"owner": bob_name}, headers=alice)
    assert peeking.json()["items"] == []

    admin = await api.admin()
    everyone = (await api.client.get("/v1/instances", params={"limit": 100}, headers=admin)).json()
    assert {a["id"], b["id"]} <= {i["id"] for i in everyone["items"]}
    only_bob = await api.client.get("/v1/instances", params={"owner": bob_name}, headers=admin)
    assert [i["id"] for i in only_bob.json()["items"]] == [b["id"]]
    assert (await api.client.get(f"/v1/instances/{a['id']}", headers=admin)).status_code == 200


async def test_unknown_and_malformed_ids_are_404_too(api: Api) -> None:
    _, alice = await api.new_user("alice")
    for instance_id in (str(uuid.uuid4()), "not-a-uuid", "1"):
        response = await api.client.get(f"/v1/instances/{instance_id}", headers=alice)
        assert response.status_code == 404
        # The same answer either way: a malformed id tells no more than an unknown one.
        assert response.json()["detail"] == "There is no such instance.", instance_id


async def test_users_see_their_accounts_without_who_else_may_use_them(api: Api) -> None:
    alice, alice_headers = await api.new_user("alice")
    bob, _ = await api.new_user("bob")
    account = await api.new_account([alice, bob])
    listed = await api.client.get("/v1/provider-accounts", headers=alice_headers)
    assert listed.status_code == 200
    [seen] = [a for a in listed.json()["items"] if a["id"] == account["id"]]
    assert "grants" not in seen
    assert bob not in listed.text
    admin_view = await api.client.get("/v1/provider-accounts?limit=200", headers=await api.admin())
    [full] = [a for a in admin_view.json()["items"] if a["id"] == account["id"]]
    assert sorted(full["grants"]) == sorted([alice, bob])
