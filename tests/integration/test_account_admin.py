"""Admins manage provider accounts for their whole life: the cloud checks credentials before
they are kept, accounts change and go (not while instances live there), and admins see how the
poller's polls of each go."""

from __future__ import annotations

import uuid
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta

from services.gateway.repository import accounts
from shared.bus import Bus
from shared.events import Event, InstancePlaced, InstanceStateChanged, ProviderAccountHealth
from shared.testing import EventProbe, wait_until
from tests.integration.api import Api
from tests.integration.publishing import connected_bus
from tests.integration.stack import registered_account


def _as(api: Api, source: str) -> AbstractAsyncContextManager[Bus]:
    """A bus connection speaking as another service (none of the others runs here)."""
    return connected_bus(api.app.state.gateway.settings.amqp_url, source)


async def _told(
    api: Api, source: str, event: Event, headers: dict, field: str, shows: object
) -> None:
    """Publish ``event`` as ``source`` would and wait until the instance shows ``field``."""
    async with _as(api, source) as bus:
        await bus.publish(event)

    async def shown() -> bool:
        got = await api.client.get(f"/v1/instances/{event.instance_id}", headers=headers)
        return got.json()[field] == shows

    await wait_until(shown, timeout=15, what=f"the gateway shows {field} {shows}")


def _account(simulator_url: str, grants: list[str], **credentials: str) -> dict:
    return {
        "name": f"acct-{uuid.uuid4().hex[:8]}",
        "provider": "simulator",
        "credentials": credentials or {"api_key": f"k-{uuid.uuid4().hex}", "api_secret": "s3cret"},
        "config": {"endpoint": simulator_url, "regions": ["north"]},
        "grants": grants,
    }


async def test_an_account_the_cloud_refuses_is_not_kept(api: Api, simulator_url: str) -> None:
    """The review's case: a simulated account without api_secret was accepted with 201."""
    admin = await api.admin()
    no_secret = _account(simulator_url, [], api_key=f"k-{uuid.uuid4().hex}")
    refused = await api.client.post("/v1/provider-accounts", json=no_secret, headers=admin)
    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert "InvalidCredsError" in refused.json()["detail"]
    assert "credentials required" in refused.json()["detail"]

    key = f"k-{uuid.uuid4().hex}"
    first = _account(simulator_url, [], api_key=key, api_secret="the-right-secret")
    assert (
        await api.client.post("/v1/provider-accounts", json=first, headers=admin)
    ).status_code == 201
    wrong = _account(simulator_url, [], api_key=key, api_secret="a-wrong-secret-value")
    refused = await api.client.post("/v1/provider-accounts", json=wrong, headers=admin)
    assert refused.status_code == 422
    assert "wrong secret" in refused.json()["detail"]
    assert "a-wrong-secret-value" not in refused.text

    listed = await api.client.get("/v1/provider-accounts", headers=admin)
    names = {a["name"] for a in listed.json()["items"]}
    assert first["name"] in names and no_secret["name"] not in names and wrong["name"] not in names


async def test_admins_change_an_account_and_the_services_hear_it(
    api: Api, simulator_url: str, probe: EventProbe
) -> None:
    admin = await api.admin()
    name, user = await api.new_user("grantee")
    account_id = (await registered_account(api, _account(simulator_url, [])))["id"]
    assert (
        await api.client.get(f"/v1/provider-accounts/{account_id}", headers=user)
    ).status_code == 404

    new_name = f"renamed-{uuid.uuid4().hex[:6]}"
    changed = await api.client.patch(
        f"/v1/provider-accounts/{account_id}",
        json={
            "name": new_name,
            "grants": [name],
            "config": {"endpoint": simulator_url, "regions": ["north", "south"]},
        },
        headers=admin,
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["name"] == new_name and changed.json()["grants"] == [name]
    assert changed.json()["revision"] == 2
    [heard] = await probe.wait_for(
        "provider_account.changed",
        lambda e: e.data["account_id"] == account_id and e.data["revision"] == 2,
    )
    assert heard.data["config"]["regions"] == ["north", "south"] and not heard.data["deleted"]

    seen = await api.client.get(f"/v1/provider-accounts/{account_id}", headers=user)
    assert seen.status_code == 200 and "grants" not in seen.json() and "health" not in seen.json()

    bad_key = await api.client.patch(
        f"/v1/provider-accounts/{account_id}",
        json={"credentials": {"api_key": f"k-{uuid.uuid4().hex}"}},
        headers=admin,
    )
    assert bad_key.status_code == 422 and "InvalidCredsError" in bad_key.json()["detail"]
    rekeyed = await api.client.patch(
        f"/v1/provider-accounts/{account_id}",
        json={"credentials": {"api_key": f"k-{uuid.uuid4().hex}", "api_secret": "another"}},
        headers=admin,
    )
    assert rekeyed.status_code == 200 and rekeyed.json()["revision"] == 3

    other = await registered_account(api, _account(simulator_url, []))
    clash = await api.client.patch(
        f"/v1/provider-accounts/{account_id}", json={"name": other["name"]}, headers=admin
    )
    assert clash.status_code == 409
    assert (
        await api.client.patch(f"/v1/provider-accounts/{account_id}", json={}, headers=user)
    ).status_code == 403
    missing = await api.client.patch("/v1/provider-accounts/nope", json={}, headers=admin)
    assert missing.status_code == 404

    audit = await api.client.get("/v1/audit", params={"limit": 200}, headers=admin)
    details = [
        e["detail"]
        for e in audit.json()["items"]
        if e["action"] == "account_changed" and e["target"] == account_id
    ]
    assert {"changed": ["credentials"]} in details
    assert {"changed": ["config", "grants", "name"], "grants": [name]} in details
    assert "another" not in audit.text


async def test_an_account_goes_only_once_no_instance_lives_there(
    api: Api, simulator_url: str, probe: EventProbe
) -> None:
    admin = await api.admin()
    name, user = await api.new_user("tenant")
    account_id = (await registered_account(api, _account(simulator_url, [name])))["id"]
    launched = await api.launch(user)
    # No scheduler or poller here: the test sends what they would, and the gateway follows.
    instance_id = launched.json()["id"]
    where = {
        "instance_id": uuid.UUID(instance_id),
        "owner": name,
        "account_id": account_id,
        "provider": "simulator",
        "provider_instance_id": "sim-test",
    }
    await _told(api, "boreas/scheduler", InstancePlaced(**where), user, "account_id", account_id)
    busy = await api.client.delete(f"/v1/provider-accounts/{account_id}", headers=admin)
    assert busy.status_code == 409 and "1 Boreas instance" in busy.json()["detail"]

    ended = InstanceStateChanged(
        **where,
        old_state="pending",
        new_state="terminated",
        cpus=2,
        memory_mb=2048,
        observed_at=datetime.now(UTC),
    )
    await _told(api, "boreas/poller", ended, user, "state", "terminated")
    gone = await api.client.delete(f"/v1/provider-accounts/{account_id}", headers=admin)
    assert gone.status_code == 204, gone.text
    [last] = await probe.wait_for(
        "provider_account.changed",
        lambda e: e.data["account_id"] == account_id and e.data["deleted"],
    )
    assert last.data["revision"] == 2
    assert (
        await api.client.get(f"/v1/provider-accounts/{account_id}", headers=admin)
    ).status_code == 404
    assert (
        await api.client.delete(f"/v1/provider-accounts/{account_id}", headers=admin)
    ).status_code == 404
    for headers in (user, admin):
        listed = await api.client.get("/v1/provider-accounts", headers=headers)
        assert account_id not in {a["id"] for a in listed.json()["items"]}


async def test_admins_see_each_accounts_health_as_the_poller_reports_it(
    api: Api, simulator_url: str
) -> None:
    admin = await api.admin()
    account_id = (await registered_account(api, _account(simulator_url, [])))["id"]
    fresh = await api.client.get(f"/v1/provider-accounts/{account_id}", headers=admin)
    assert fresh.json()["health"] == {
        "last_poll_at": None,
        "last_error": None,
        "consecutive_failures": 0,
    }

    polled = datetime.now(UTC).replace(microsecond=0)
    failing = ProviderAccountHealth(
        account_id=account_id,
        last_poll_at=polled,
        last_error="InvalidCredsError: unknown api key or wrong secret",
        consecutive_failures=3,
    )
    async with _as(api, "boreas/poller") as bus:
        await bus.publish(failing)

    async def shown() -> dict:
        got = await api.client.get(f"/v1/provider-accounts/{account_id}", headers=admin)
        return got.json()["health"]

    async def failing_shown() -> bool:
        return (await shown())["consecutive_failures"] == 3

    await wait_until(failing_shown, timeout=15, what="the health report was recorded")
    health = await shown()
    assert health["last_error"] == "InvalidCredsError: unknown api key or wrong secret"
    assert datetime.fromisoformat(health["last_poll_at"]) == polled

    # Reports carry no order on the bus: one about an earlier poll, arriving late, is ignored.
    older = failing.model_copy(
        update={"last_poll_at": polled - timedelta(minutes=5), "consecutive_failures": 0}
    )
    async with api.app.state.gateway.pool.acquire() as conn:
        await accounts.record_health(conn, older, reported_at=datetime.now(UTC))
    assert (await shown())["consecutive_failures"] == 3
