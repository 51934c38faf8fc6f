"""Lease policies and leases through the API: what a launch gets, extending a lease, and
starting an instance whose lease ended. The gateway alone; expiry is the scheduler's."""

from __future__ import annotations

from datetime import datetime, timedelta

from shared.testing import EventProbe
from tests.integration.api import Api


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
