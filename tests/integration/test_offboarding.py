"""Admins offboard people: list, disable, reset, log out everywhere, delete (terminating or
handing over their instances). Every step is audited; a disabled user's tokens die at once."""

from __future__ import annotations

import uuid

from shared.runtime import ServiceRuntime
from shared.testing import EventProbe, wait_until
from tests.integration.api import Api
from tests.integration.stack import simulator_account


async def _audited(api: Api, action: str, target: str) -> dict:
    entries = await api.client.get("/v1/audit", params={"limit": 200}, headers=await api.admin())
    found = [e for e in entries.json()["items"] if e["action"] == action and e["target"] == target]
    assert found, f"no {action} entry for {target}"
    return found[0]


async def test_admins_list_users_page_by_page_with_their_state(api: Api) -> None:
    admin = await api.admin()
    names = [(await api.new_user("listed"))[0] for _ in range(3)]
    disabled = await api.client.patch(
        f"/v1/users/{names[1]}", json={"disabled": True}, headers=admin
    )
    assert disabled.status_code == 200, disabled.text

    seen: dict[str, dict] = {}
    cursor = None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = await api.client.get("/v1/users", params=params, headers=admin)
        assert page.status_code == 200, page.text
        seen |= {u["username"]: u for u in page.json()["items"]}
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert {"admin", *names} <= set(seen)
    assert [seen[n]["disabled"] for n in names] == [False, True, False]
    assert "password_hash" not in seen[names[0]] and seen["admin"]["role"] == "admin"

    _, user = await api.new_user()
    assert (await api.client.get("/v1/users", headers=user)).status_code == 403


async def test_a_disabled_users_tokens_stop_working_at_once(api: Api) -> None:
    admin = await api.admin()
    name, user = await api.new_user("leaver")
    assert (await api.client.get("/v1/users/me", headers=user)).status_code == 200

    off = await api.client.patch(f"/v1/users/{name}", json={"disabled": True}, headers=admin)
    assert off.status_code == 200 and off.json()["disabled"] is True
    assert (await api.client.get("/v1/users/me", headers=user)).status_code == 401
    login = {"username": name, "password": f"{name}-password"}
    refused = await api.client.post("/v1/tokens", json=login)
    assert refused.status_code == 403 and "disabled" in refused.json()["detail"]
    wrong = await api.client.post("/v1/tokens", json={**login, "password": "not-the-password"})
    assert wrong.status_code == 401, "a guesser learns nothing about the account's state"

    on = await api.client.patch(f"/v1/users/{name}", json={"disabled": False}, headers=admin)
    assert on.status_code == 200 and on.json()["disabled"] is False
    assert (await api.client.get("/v1/users/me", headers=user)).status_code == 401, (
        "enabling the user again does not bring old tokens back"
    )
    assert (await api.client.post("/v1/tokens", json=login)).status_code == 201
    entry = await _audited(api, "user_changed", name)
    assert entry["detail"] == {"disabled": False, "tokens_revoked": 0}


async def test_a_password_reset_revokes_the_old_tokens(api: Api) -> None:
    admin = await api.admin()
    name, user = await api.new_user("forgetful")
    new_password = "a-brand-new-password"
    reset = await api.client.patch(
        f"/v1/users/{name}", json={"password": new_password}, headers=admin
    )
    assert reset.status_code == 200, reset.text
    assert (await api.client.get("/v1/users/me", headers=user)).status_code == 401
    old = {"username": name, "password": f"{name}-password"}
    assert (await api.client.post("/v1/tokens", json=old)).status_code == 401
    assert await api.login(name, new_password)
    entry = await _audited(api, "user_changed", name)
    assert entry["detail"] == {"password": "reset", "tokens_revoked": 1}
    assert new_password not in str(entry)


async def test_users_log_themselves_out_everywhere_and_only_themselves(api: Api) -> None:
    name, first = await api.new_user("traveller")
    second = await api.login(name, f"{name}-password")
    other_name, other = await api.new_user("bystander")

    assert (
        await api.client.delete(f"/v1/users/{other_name}/tokens", headers=first)
    ).status_code == 404
    assert (await api.client.get("/v1/users/me", headers=other)).status_code == 200

    out = await api.client.delete(f"/v1/users/{name}/tokens", headers=first)
    assert out.status_code == 204
    for token in (first, second):
        assert (await api.client.get("/v1/users/me", headers=token)).status_code == 401

    by_admin = await api.client.delete(f"/v1/users/{other_name}/tokens", headers=await api.admin())
    assert by_admin.status_code == 204
    assert (await api.client.get("/v1/users/me", headers=other)).status_code == 401
    assert (await _audited(api, "tokens_revoked", other_name))["detail"] == {"count": 1}


async def test_the_last_admin_who_can_log_in_stays_one(api: Api) -> None:
    admin = await api.admin()
    for change in ({"disabled": True}, {"role": "user"}):
        refused = await api.client.patch("/v1/users/admin", json=change, headers=admin)
        assert refused.status_code == 409, refused.text
        assert "last admin" in refused.json()["detail"]
    second, _ = await api.new_user("deputy", role="admin")
    demoted = await api.client.patch("/v1/users/admin", json={"role": "user"}, headers=admin)
    assert demoted.status_code == 200 and demoted.json()["role"] == "user"
    # The demoted admin's token is a user's token now; the deputy puts it back.
    deputy = await api.login(second, f"{second}-password")
    back = await api.client.patch("/v1/users/admin", json={"role": "admin"}, headers=deputy)
    assert back.status_code == 200
    assert (
        await api.client.patch("/v1/users/nobody-here", json={}, headers=deputy)
    ).status_code == 404


async def test_deleting_a_user_needs_a_decision_about_their_instances(
    api: Api, probe: EventProbe
) -> None:
    admin = await api.admin()
    name, user = await api.new_user("departing")
    await api.new_account([name])
    launched = await api.launch(user)
    assert launched.status_code == 202
    hook = await api.client.post(
        "/v1/webhooks",
        json={"url": "http://127.0.0.1:9/hook", "topics": ["instance.*"]},
        headers=user,
    )
    assert hook.status_code == 201, hook.text

    refused = await api.client.delete(f"/v1/users/{name}", headers=admin)
    assert refused.status_code == 409
    assert "1 live instance" in refused.json()["detail"]
    both = await api.client.delete(
        f"/v1/users/{name}",
        params={"instances": "terminate", "transfer_to": "admin"},
        headers=admin,
    )
    assert both.status_code == 422

    gone = await api.client.delete(
        f"/v1/users/{name}", params={"instances": "terminate"}, headers=admin
    )
    assert gone.status_code == 204, gone.text
    instance_id = launched.json()["id"]
    [asked] = await probe.wait_for("instance.action_requested", lambda e: e.subject == instance_id)
    assert asked.data["action"] == "terminate" and asked.data["requested_by"] == "admin"
    [dropped] = await probe.wait_for(
        "webhook.changed", lambda e: e.data["owner"] == name and e.data["deleted"]
    )
    assert dropped.data["webhook_id"] == hook.json()["id"]
    shown = await api.client.get(f"/v1/instances/{instance_id}", headers=admin)
    assert shown.json()["state"] == "terminating"

    assert (await api.client.get("/v1/users/me", headers=user)).status_code == 401
    login = {"username": name, "password": f"{name}-password"}
    assert (await api.client.post("/v1/tokens", json=login)).status_code == 401
    again = await api.client.post(
        "/v1/users", json={"username": name, "password": "x" * 12}, headers=admin
    )
    assert again.status_code == 409, "a deleted user's name is never given to someone else"
    listed = await api.client.get("/v1/users", params={"limit": 100}, headers=admin)
    assert name not in {u["username"] for u in listed.json()["items"]}
    assert (await api.client.delete(f"/v1/users/{name}", headers=admin)).status_code == 404
    assert (await _audited(api, "user_deleted", name))["detail"] == {
        "instances": 1,
        "terminated": True,
    }


async def test_a_launch_still_being_decided_is_not_handed_over(api: Api) -> None:
    """Until quota and the scheduler have taken a launch in, it is not theirs to move (no
    scheduler runs here: the launch stays requested)."""
    admin = await api.admin()
    name, user = await api.new_user("hasty")
    heir, _ = await api.new_user("patient")
    await api.new_account([name])
    assert (await api.launch(user)).status_code == 202
    early = await api.client.delete(
        f"/v1/users/{name}", params={"transfer_to": heir}, headers=admin
    )
    assert early.status_code == 409 and "still being launched" in early.json()["detail"]
    assert early.headers["Retry-After"] == "5"
    assert (await api.client.get("/v1/users/me", headers=user)).status_code == 200


async def test_a_deployment_still_being_decided_is_not_handed_over(api: Api) -> None:
    """No quota runs here: the deployment stays requested, and nothing is handed over."""
    admin = await api.admin()
    name, user = await api.new_user("planner")
    heir, _ = await api.new_user("waiting")
    await api.new_account([name])
    group = {"name": "db", "count": 1, "image": "debian-12", "cpus": 1, "memory_mb": 512}
    created = await api.deploy(user, {"groups": [group]}, name="undecided")
    assert created.status_code == 202, created.text
    early = await api.client.delete(
        f"/v1/users/{name}", params={"transfer_to": heir}, headers=admin
    )
    assert early.status_code == 409, early.text
    assert "still being decided" in early.json()["detail"]
    assert early.headers["Retry-After"] == "5"
    shown = await api.client.get(f"/v1/deployments/{created.json()['id']}", headers=user)
    assert shown.status_code == 200 and shown.json()["owner"] == name


async def test_an_admin_cannot_delete_themselves(api: Api) -> None:
    refused = await api.client.delete("/v1/users/admin", headers=await api.admin())
    assert refused.status_code == 409


async def test_a_deleted_users_instances_go_to_another_user_everywhere(
    api: Api,
    clouds_side: tuple[ServiceRuntime, ServiceRuntime],
    simulator_url: str,
    probe: EventProbe,
) -> None:
    """The instance, its usage and its later events belong to the new owner: the gateway, quota,
    the scheduler and the poller all follow instance.owner_changed."""
    admin = await api.admin()
    leaver, leaver_token = await api.new_user("handover")
    heir, heir_token = await api.new_user("heir")
    await simulator_account(api, simulator_url, [leaver, heir], followers=clouds_side)
    launched = await api.launch(leaver_token, cpus=2, memory_mb=1024)
    instance_id = launched.json()["id"]

    await probe.wait_for(
        "instance.state_changed",
        lambda e: e.subject == instance_id and e.data["new_state"] == "running",
        timeout=30,
    )

    async def pending_or_later() -> bool:
        shown = await api.client.get(f"/v1/instances/{instance_id}", headers=admin)
        return shown.json()["state"] != "requested"

    await wait_until(pending_or_later, timeout=20, what="the gateway saw the placement")
    unknown = await api.client.delete(
        f"/v1/users/{leaver}",
        params={"transfer_to": f"nobody-{uuid.uuid4().hex[:6]}"},
        headers=admin,
    )
    assert unknown.status_code == 422
    moved = await api.client.delete(
        f"/v1/users/{leaver}", params={"transfer_to": heir}, headers=admin
    )
    assert moved.status_code == 204, moved.text

    [changed] = await probe.wait_for("instance.owner_changed", lambda e: e.subject == instance_id)
    assert changed.data | {"instance_id": instance_id} == {
        "instance_id": instance_id,
        "owner": heir,
        "previous_owner": leaver,
        "changed_by": "admin",
        "cpus": 2,
        "memory_mb": 1024,
    }
    await probe.wait_for(
        "quota.usage_changed",
        lambda e: e.data["owner"] == heir and e.data["usage"]["cpus"] == 2,
        timeout=20,
    )
    await probe.wait_for(
        "quota.usage_changed",
        lambda e: e.data["owner"] == leaver and e.data["usage"]["cpus"] == 0,
        timeout=20,
    )
    mine = await api.client.get(f"/v1/instances/{instance_id}", headers=heir_token)
    assert mine.status_code == 200 and mine.json()["owner"] == heir

    stop = await api.client.post(f"/v1/instances/{instance_id}/stop", headers=heir_token)
    assert stop.status_code == 202, stop.text
    [stopped] = await probe.wait_for(
        "instance.state_changed",
        lambda e: e.subject == instance_id and e.data["new_state"] == "stopped",
        timeout=30,
    )
    assert stopped.data["owner"] == heir
    usage = await api.client.get(f"/v1/quotas/{heir}", headers=heir_token)
    assert usage.json()["usage"]["cpus"] == 2
    entry = await _audited(api, "user_deleted", leaver)
    assert entry["detail"] == {"instances": 1, "transferred_to": heir}


async def test_a_deleted_users_deployment_goes_to_the_heir_with_its_instances(
    api: Api,
    clouds_side: tuple[ServiceRuntime, ServiceRuntime],
    simulator_url: str,
    probe: EventProbe,
) -> None:
    """The heir sees the deployment, scales it and deletes it; its new member is the heir's.
    Before, the deployment stayed with a user nobody could log in as."""
    admin = await api.admin()
    leaver, leaver_token = await api.new_user("builder")
    heir, heir_token = await api.new_user("successor")
    await simulator_account(api, simulator_url, [leaver, heir], followers=clouds_side)
    app = {
        "name": "app",
        "count": 1,
        "image": "debian-12",
        "cpus": 1,
        "memory_mb": 512,
        "placement": {"provider": "simulator"},
    }
    created = await api.deploy(leaver_token, {"groups": [app]}, name="handed-over")
    assert created.status_code == 202, created.text
    path = f"/v1/deployments/{created.json()['id']}"

    async def shown(headers: dict, state: str, members: int) -> dict | None:
        got = (await api.client.get(path, headers=headers)).json()
        [group] = got["groups"]
        up = [m for m in group["instances"] if m["state"] == "running"]
        return got if got["state"] == state and len(up) == members else None

    await wait_until(lambda: shown(admin, "running", 1), timeout=30, what="deployment running")
    moved = await api.client.delete(
        f"/v1/users/{leaver}", params={"transfer_to": heir}, headers=admin
    )
    assert moved.status_code == 204, moved.text

    mine = await api.client.get(path, headers=heir_token)
    assert mine.status_code == 200 and mine.json()["owner"] == heir
    assert (await _audited(api, "user_deleted", leaver))["detail"] == {
        "instances": 1,
        "deployments": 1,
        "transferred_to": heir,
    }
    scaled = await api.client.post(
        f"{path}/scale", json={"group": "app", "count": 2}, headers=heir_token
    )
    assert scaled.status_code == 202, scaled.text
    running = await wait_until(
        lambda: shown(heir_token, "running", 2), timeout=30, what="scaled to two"
    )
    members = [m["id"] for m in running["groups"][0]["instances"]]
    for member in members:
        got = await api.client.get(f"/v1/instances/{member}", headers=heir_token)
        assert got.status_code == 200 and got.json()["owner"] == heir, got.text
    placed = {e.subject: e.data["owner"] for e in probe.matching("instance.placed")}
    assert sorted(placed[m] for m in members) == sorted([leaver, heir]), (
        "the first member was placed for the leaver, the one scaled up for the heir"
    )

    deleted = await api.client.delete(path, headers=heir_token)
    assert deleted.status_code == 202, deleted.text
    await wait_until(
        lambda: _state_is(api, path, heir_token, "deleted"), timeout=30, what="deleted"
    )


async def _state_is(api: Api, path: str, headers: dict, state: str) -> bool:
    return (await api.client.get(path, headers=headers)).json()["state"] == state
