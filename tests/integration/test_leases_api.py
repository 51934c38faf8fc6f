"""Lease policies and leases through the API: what a launch gets, extending a lease, and
starting an instance whose lease ended. The gateway alone; expiry is the scheduler's."""

from __future__ import annotations

from datetime import datetime, timedelta

from shared.events import InstanceLeaseExtended, InstanceState, InstanceStateChanged
from shared.testing import EventProbe, wait_until
from tests.integration.api import Api, FakeClock, gateway_settings, running_gateway
from tests.integration.publishing import connected_bus


async def set_policy(api: Api, username: str, **policy: object) -> dict:
    response = await api.client.put(
        f"/v1/lease-policies/{username}", json=policy, headers=await api.admin()
    )
    assert response.status_code == 200, response.text
    return response.json()


async def test_a_user_without_a_policy_has_the_default_one(api: Api) -> None:
    name, headers = await api.new_user()
    response = await api.client.get(f"/v1/lease-policies/{name}", headers=headers)
    assert response.status_code == 200
    assert response.json() == {
        "default_seconds": None,
        "max_seconds": None,
        "on_expiry": "stop",
        "warn_seconds": 300,
    }


async def test_admins_set_policies_and_only_that_user_reads_theirs(api: Api) -> None:
    name, headers = await api.new_user()
    _other, other_headers = await api.new_user()
    body = {
        "default_seconds": 3600,
        "max_seconds": 7200,
        "on_expiry": "terminate",
        "warn_seconds": 60,
    }
    assert await set_policy(api, name, **body) == body
    assert (await api.client.get(f"/v1/lease-policies/{name}", headers=headers)).json() == body
    assert (
        await api.client.get(f"/v1/lease-policies/{name}", headers=other_headers)
    ).status_code == 404
    refused = await api.client.put(f"/v1/lease-policies/{name}", json=body, headers=headers)
    assert refused.status_code == 403
    unknown = await api.client.put(
        "/v1/lease-policies/nobody-here", json=body, headers=await api.admin()
    )
    assert unknown.status_code == 404
    audit = await api.client.get(
        "/v1/audit", params={"action": "lease_policy_set"}, headers=await api.admin()
    )
    assert any(e["target"] == name and e["detail"] == body for e in audit.json()["items"])


async def test_bad_policies_are_422(api: Api) -> None:
    name, _headers = await api.new_user()
    admin = await api.admin()
    for bad in (
        {"default_seconds": 7200, "max_seconds": 3600},
        {"on_expiry": "explode"},
        {"warn_seconds": -1},
        {"max_seconds": 0},
        {"unknown": 1},
    ):
        response = await api.client.put(f"/v1/lease-policies/{name}", json=bad, headers=admin)
        assert response.status_code == 422, bad


async def test_a_launch_gets_the_default_lease_or_a_shorter_one_it_asks_for(
    api: Api, probe: EventProbe
) -> None:
    name, headers = await api.new_user()
    await api.new_account([name])
    await set_policy(api, name, default_seconds=3600, max_seconds=7200, warn_seconds=120)

    default = await api.launch(headers, name="leased")
    assert default.status_code == 202, default.text
    asked = await api.launch(headers, name="short", lease_seconds=600)
    assert asked.status_code == 202, asked.text
    for response, seconds in ((default, 3600), (asked, 600)):
        instance = response.json()
        expires_at = datetime.fromisoformat(instance["expires_at"])
        created_at = datetime.fromisoformat(instance["created_at"])
        assert expires_at - created_at == timedelta(seconds=seconds)
        (event,) = await probe.wait_for(
            "instance.launch_requested", lambda e, i=instance["id"]: e.subject == i, timeout=10
        )
        assert event.data["lease"] == {
            "expires_at": event.data["lease"]["expires_at"],
            "on_expiry": "stop",
            "warn_seconds": 120,
        }
        assert datetime.fromisoformat(event.data["lease"]["expires_at"]) == expires_at


async def test_no_policy_no_lease_unless_asked(api: Api, probe: EventProbe) -> None:
    name, headers = await api.new_user()
    await api.new_account([name])
    plain = await api.launch(headers, name="plain")
    assert plain.status_code == 202
    assert plain.json()["expires_at"] is None
    (event,) = await probe.wait_for(
        "instance.launch_requested", lambda e: e.subject == plain.json()["id"], timeout=10
    )
    assert event.data["lease"] is None


async def test_a_lease_past_the_maximum_is_422_naming_it(api: Api) -> None:
    name, headers = await api.new_user()
    await api.new_account([name])
    await set_policy(api, name, max_seconds=3600)
    response = await api.launch(headers, lease_seconds=3601)
    assert response.status_code == 422
    assert "3600" in response.json()["detail"]
    assert (await api.launch(headers, lease_seconds=3600)).status_code == 202


async def moved_to(
    amqp_url: str, instance: dict, *states: InstanceState, observed_at: datetime
) -> None:
    """Publish the state changes a poller would see for ``instance``, one second apart."""
    old: InstanceState | None = None
    async with connected_bus(amqp_url, "boreas/poller") as bus:
        for i, new in enumerate(states):
            await bus.publish(
                InstanceStateChanged(
                    instance_id=instance["id"],
                    owner=instance["owner"],
                    account_id="acct-x",
                    provider="simulator",
                    provider_instance_id="sim-x",
                    old_state=old,
                    new_state=new,
                    cpus=instance["cpus"],
                    memory_mb=instance["memory_mb"],
                    observed_at=observed_at + timedelta(seconds=i),
                )
            )
            old = new


async def shows(api: Api, headers: dict, instance_id: str, **fields: object) -> dict:
    async def matches() -> dict | None:
        got = (await api.client.get(f"/v1/instances/{instance_id}", headers=headers)).json()
        return got if all(got[k] == v for k, v in fields.items()) else None

    return await wait_until(matches, timeout=10, what=f"instance shows {fields}")


async def test_extending_a_lease(api: Api, probe: EventProbe) -> None:
    name, headers = await api.new_user()
    _other, other_headers = await api.new_user()
    await api.new_account([name])
    await set_policy(api, name, max_seconds=3600)
    instance = (await api.launch(headers, lease_seconds=600)).json()
    path = f"/v1/instances/{instance['id']}/extend"
    first_end = datetime.fromisoformat(instance["expires_at"])

    extended = await api.client.post(path, json={"seconds": 600}, headers=headers)
    assert extended.status_code == 200, extended.text
    assert datetime.fromisoformat(extended.json()["expires_at"]) == first_end + timedelta(
        seconds=600
    )
    (event,) = await probe.wait_for(
        "instance.lease_extended", lambda e: e.subject == instance["id"], timeout=10
    )
    assert event.data["extended_by"] == name
    assert datetime.fromisoformat(event.data["expires_at"]) == first_end + timedelta(seconds=600)

    past_max = await api.client.post(path, json={"seconds": 3000}, headers=headers)
    assert past_max.status_code == 422
    assert "3600 seconds" in past_max.json()["detail"]
    assert (await api.client.post(path, json={"seconds": 0}, headers=headers)).status_code == 422
    not_yours = await api.client.post(path, json={"seconds": 60}, headers=other_headers)
    assert not_yours.status_code == 404
    by_admin = await api.client.post(path, json={"seconds": 60}, headers=await api.admin())
    assert by_admin.status_code == 200
    assert datetime.fromisoformat(by_admin.json()["expires_at"]) == first_end + timedelta(
        seconds=660
    )

    unleased = (await api.launch(headers, name="unleased")).json()
    # set_policy gave no default: this one has no lease to extend.
    none = await api.client.post(
        f"/v1/instances/{unleased['id']}/extend", json={"seconds": 60}, headers=headers
    )
    assert none.status_code == 409
    assert "no lease" in none.json()["detail"]


async def test_the_read_model_follows_extensions_published_by_anyone(
    api: Api, amqp_url: str
) -> None:
    name, headers = await api.new_user()
    await api.new_account([name])
    instance = (await api.launch(headers, lease_seconds=600)).json()
    later = datetime.fromisoformat(instance["expires_at"]) + timedelta(hours=1)
    async with connected_bus(amqp_url) as bus:
        await bus.publish(
            InstanceLeaseExtended(
                instance_id=instance["id"], owner=name, expires_at=later, extended_by="admin"
            )
        )

    async def followed() -> bool:
        got = (await api.client.get(f"/v1/instances/{instance['id']}", headers=headers)).json()
        return datetime.fromisoformat(got["expires_at"]) == later

    await wait_until(followed, timeout=10, what="the extension is in the read model")


async def test_an_instance_whose_lease_ended_starts_only_once_extended(
    amqp_url: str, database_url: str
) -> None:
    clock = FakeClock()
    async with running_gateway(gateway_settings(amqp_url, database_url), clock=clock) as api:
        name, headers = await api.new_user()
        await api.new_account([name])
        instance = (await api.launch(headers, lease_seconds=60)).json()
        await moved_to(
            amqp_url,
            instance,
            InstanceState.PENDING,
            InstanceState.RUNNING,
            InstanceState.STOPPED,
            observed_at=clock.now,
        )
        await shows(api, headers, instance["id"], state="stopped")
        clock.advance(61)
        start = f"/v1/instances/{instance['id']}/start"
        refused = await api.client.post(start, headers=headers)
        assert refused.status_code == 409
        expired_at = datetime.fromisoformat(instance["expires_at"]).isoformat()
        assert refused.json()["detail"] == f"The lease expired at {expired_at}; extend it first."
        extended = await api.client.post(
            f"/v1/instances/{instance['id']}/extend", json={"seconds": 600}, headers=headers
        )
        assert extended.status_code == 200
        # Counted from now, the old end having passed.
        assert datetime.fromisoformat(extended.json()["expires_at"]) == clock.now + timedelta(
            seconds=600
        )
        assert (await api.client.post(start, headers=headers)).status_code == 202

        await moved_to(
            amqp_url,
            instance,
            InstanceState.TERMINATED,
            observed_at=clock.now + timedelta(seconds=10),
        )
        await shows(api, headers, instance["id"], state="terminated")
        ended = await api.client.post(
            f"/v1/instances/{instance['id']}/extend", json={"seconds": 60}, headers=headers
        )
        assert ended.status_code == 409
