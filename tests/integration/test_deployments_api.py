"""Deployments through the API, the gateway alone: requests (JSON and YAML) and the templates
refused with pointers, member rows, ownership, scaling and deleting as the gateway sees them, and
the read model following the orchestrator's events (published here in its place)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import yaml

from shared.events import DeploymentScaleRefused, DeploymentStateChanged
from shared.testing import EventProbe, wait_until
from tests.integration.api import Api
from tests.integration.publishing import connected_bus

THREE_GROUPS: dict[str, Any] = {
    "groups": [
        {"name": "db", "count": 1, "image": "postgres-{{ pg }}", "cpus": 2, "memory_mb": 2048},
        {"name": "app", "count": 1, "image": "app", "cpus": 1, "memory_mb": 1024, "after": ["db"]},
        {
            "name": "web",
            "count": 2,
            "image": "nginx",
            "cpus": 1,
            "memory_mb": 512,
            "spread": "accounts",
            "after": ["app"],
        },
    ],
    "on_failure": "keep",
}


async def owner_with_accounts(api: Api, accounts: int = 2) -> tuple[str, dict]:
    name, headers = await api.new_user()
    for _ in range(accounts):
        await api.new_account([name])
    return name, headers


async def refusal(api: Api, headers: dict, template: dict, **fields: Any) -> list[dict]:
    response = await api.deploy(headers, template, **fields)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    first = body["errors"][0]
    assert body["detail"] == f"{first['pointer']}: {first['message']}"
    return body["errors"]


async def test_a_deployment_is_requested_with_its_members(api: Api, probe: EventProbe) -> None:
    owner, headers = await owner_with_accounts(api)
    response = await api.deploy(headers, THREE_GROUPS, parameters={"pg": 16})
    assert response.status_code == 202, response.text
    deployment = response.json()
    assert response.headers["Location"] == f"/v1/deployments/{deployment['id']}"
    assert deployment["state"] == "requested"
    assert deployment["owner"] == owner
    assert deployment["on_failure"] == "keep"
    assert deployment["parameters"] == {"pg": 16}
    groups = {g["name"]: g for g in deployment["groups"]}
    assert [g["name"] for g in deployment["groups"]] == ["db", "app", "web"]
    assert groups["web"]["spread"] == "accounts"
    assert groups["web"]["after"] == ["app"]
    assert [m["name"] for m in groups["web"]["instances"]] == ["shop-web-1", "shop-web-2"]
    assert {m["state"] for g in groups.values() for m in g["instances"]} == {"requested"}

    (event,) = await probe.wait_for(
        "deployment.requested", lambda e: e.subject == deployment["id"], timeout=10
    )
    members = event.data["members"]
    assert [m["name"] for m in members] == ["shop-db-1", "shop-app-1", "shop-web-1", "shop-web-2"]
    assert members[0]["image"] == "postgres-16"
    assert event.data["template"]["groups"][0]["image"] == "postgres-16"
    assert {m["spread"] for m in members if m["group"] == "web"} == {"accounts"}

    web_1 = groups["web"]["instances"][0]["id"]
    instance = (await api.client.get(f"/v1/instances/{web_1}", headers=headers)).json()
    assert instance["deployment_id"] == deployment["id"]
    assert instance["group"] == "web"
    assert instance["state"] == "requested"
    assert instance["image"] == "nginx"
    listed = (await api.client.get("/v1/instances", headers=headers)).json()["items"]
    assert {i["group"] for i in listed} == {"db", "app", "web"}

    audit = await api.client.get(
        "/v1/audit", params={"action": "deployment_requested"}, headers=await api.admin()
    )
    assert any(e["target"] == deployment["id"] for e in audit.json()["items"])


async def test_yaml_bodies(api: Api) -> None:
    _owner, headers = await owner_with_accounts(api)
    body = {"name": "yamlshop", "template": THREE_GROUPS, "parameters": {"pg": "15"}}
    response = await api.client.post(
        "/v1/deployments",
        content=yaml.safe_dump(body),
        headers={**headers, "Content-Type": "application/yaml"},
    )
    assert response.status_code == 202, response.text
    assert response.json()["name"] == "yamlshop"
    assert [g["count"] for g in response.json()["groups"]] == [1, 1, 2]

    for content, content_type, detail in (
        (b"name: [unclosed", "application/yaml", "not valid YAML"),
        (b"a: &x [1, 2]\nb: *x\n", "application/x-yaml", "aliases"),
        (b"{not json", "application/json", "not valid JSON"),
    ):
        unreadable = await api.client.post(
            "/v1/deployments", content=content, headers={**headers, "Content-Type": content_type}
        )
        assert unreadable.status_code == 400, content
        assert detail in unreadable.json()["detail"]


async def test_bad_templates_are_refused_with_pointers(api: Api) -> None:
    _owner, headers = await owner_with_accounts(api)
    groups: list[dict[str, Any]] = THREE_GROUPS["groups"]
    params = {"parameters": {"pg": 16}}

    cycle = {"groups": [{**groups[0], "after": ["web"]}, *groups[1:]]}
    (problem,) = await refusal(api, headers, cycle, **params)
    assert problem["pointer"] == "/template/groups/0/after/0"
    assert "db → web → app → db" in problem["message"]

    unknown_after = {"groups": [groups[0], {**groups[1], "after": ["db", "cache"]}, groups[2]]}
    (problem,) = await refusal(api, headers, unknown_after, **params)
    assert problem == {"pointer": "/template/groups/1/after/1", "message": "no group named 'cache'"}

    missing = await refusal(api, headers, THREE_GROUPS)
    assert missing[0]["pointer"] == "/template/groups/0/image"
    assert "'pg'" in missing[0]["message"]
    unused = await refusal(api, headers, THREE_GROUPS, parameters={"pg": 16, "extra": "x"})
    assert unused == [{"pointer": "/parameters/extra", "message": "not used by the template"}]
    not_scalar = await refusal(api, headers, THREE_GROUPS, parameters={"pg": [16]})
    assert not_scalar[0]["pointer"] == "/parameters/pg"

    unknown_field = {"groups": [{**groups[0], "colour": "red"}, *groups[1:]]}
    assert await refusal(api, headers, unknown_field, **params) == [
        {"pointer": "/template/groups/0/colour", "message": "unknown field"}
    ]
    top_level = await refusal(api, headers, THREE_GROUPS, flavour="x", **params)
    assert top_level == [{"pointer": "/flavour", "message": "unknown field"}]
    bad_count = {"groups": [{**groups[0], "count": 0}, *groups[1:]]}
    (problem,) = await refusal(api, headers, bad_count, **params)
    assert problem["pointer"] == "/template/groups/0/count"
    too_long = await refusal(api, headers, THREE_GROUPS, name="x" * 30, **params)
    assert too_long[0]["pointer"] == "/name"

    # Nothing was written for any of them.
    listed = (await api.client.get("/v1/deployments", headers=headers)).json()
    assert listed["items"] == []
    assert (await api.client.get("/v1/instances", headers=headers)).json()["items"] == []


async def test_placement_spread_and_lease_are_checked_per_group(api: Api) -> None:
    owner, headers = await owner_with_accounts(api, accounts=1)
    web = {"name": "web", "count": 2, "image": "nginx", "cpus": 1, "memory_mb": 512}
    problems = await refusal(
        api,
        headers,
        {
            "groups": [
                {**web, "spread": "accounts"},
                {**web, "name": "far", "placement": {"region": "mars"}},
                {**web, "name": "mid", "spread": "regions", "count": 3},
            ]
        },
    )
    by_pointer = {p["pointer"]: p["message"] for p in problems}
    assert set(by_pointer) == {
        "/template/groups/0/spread",
        "/template/groups/1/placement",
        "/template/groups/2/spread",
    }
    assert "2 instances need 2 accounts, but only 1" in by_pointer["/template/groups/0/spread"]
    assert "region 'mars'" in by_pointer["/template/groups/1/placement"]
    assert "offer only 2 (north, south)" in by_pointer["/template/groups/2/spread"]

    await api.client.put(
        f"/v1/lease-policies/{owner}", json={"max_seconds": 3600}, headers=await api.admin()
    )
    (problem,) = await refusal(api, headers, {"groups": [{**web, "lease_seconds": 7200}]})
    assert problem["pointer"] == "/template/groups/0/lease_seconds"
    assert "3600 seconds" in problem["message"]

    leased = await api.deploy(headers, {"groups": [{**web, "lease_seconds": 600}]})
    assert leased.status_code == 202, leased.text
    member = leased.json()["groups"][0]["instances"][0]["id"]
    shown = (await api.client.get(f"/v1/instances/{member}", headers=headers)).json()
    assert shown["expires_at"] is not None


async def test_ownership(api: Api) -> None:
    owner, headers = await owner_with_accounts(api)
    _other, other_headers = await api.new_user()
    deployment = (await api.deploy(headers, THREE_GROUPS, parameters={"pg": 16})).json()
    path = f"/v1/deployments/{deployment['id']}"

    assert (await api.client.get(path, headers=headers)).status_code == 200
    assert (await api.client.get(path, headers=other_headers)).status_code == 404
    assert (await api.client.delete(path, headers=other_headers)).status_code == 404
    scaled = await api.client.post(
        f"{path}/scale", json={"group": "web", "count": 3}, headers=other_headers
    )
    assert scaled.status_code == 404
    assert (await api.client.get("/v1/deployments/not-a-uuid", headers=headers)).status_code == 404
    assert (await api.client.get("/v1/deployments", headers=other_headers)).json()["items"] == []
    foreign = await api.client.get(
        "/v1/deployments", params={"owner": owner}, headers=other_headers
    )
    assert foreign.json()["items"] == []

    admin = await api.admin()
    assert (await api.client.get(path, headers=admin)).json()["owner"] == owner
    theirs = await api.client.get("/v1/deployments", params={"owner": owner}, headers=admin)
    assert [d["id"] for d in theirs.json()["items"]] == [deployment["id"]]
    everyone = (await api.client.get("/v1/deployments", headers=admin)).json()["items"]
    assert deployment["id"] in {d["id"] for d in everyone}


async def test_idempotency_keys(api: Api) -> None:
    _owner, headers = await owner_with_accounts(api)
    keyed = {**headers, "Idempotency-Key": f"deploy-{uuid.uuid4()}"}
    body = {"name": "shop", "template": THREE_GROUPS, "parameters": {"pg": 16}}
    first = await api.client.post("/v1/deployments", json=body, headers=keyed)
    again = await api.client.post("/v1/deployments", json=body, headers=keyed)
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["groups"] == first.json()["groups"]
    other_body = await api.client.post(
        "/v1/deployments", json={**body, "name": "other"}, headers=keyed
    )
    assert other_body.status_code == 422
    assert "different request body" in other_body.json()["detail"]
    listed = (await api.client.get("/v1/deployments", headers=headers)).json()["items"]
    assert len(listed) == 1
    assert len((await api.client.get("/v1/instances", headers=headers)).json()["items"]) == 4

    racing = {**headers, "Idempotency-Key": f"race-{uuid.uuid4()}"}
    answers = await asyncio.gather(
        *(api.client.post("/v1/deployments", json=body, headers=racing) for _ in range(8))
    )
    assert {a.status_code for a in answers} == {202}, [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    listed = (await api.client.get("/v1/deployments", headers=headers)).json()["items"]
    assert len(listed) == 2
    assert len((await api.client.get("/v1/instances", headers=headers)).json()["items"]) == 8


async def publish_state(
    amqp_url: str,
    deployment: dict,
    old: str | None,
    new: str,
    at: datetime,
    *,
    reason: str | None = None,
    failed: list[uuid.UUID] | None = None,
) -> None:
    async with connected_bus(amqp_url, source="boreas/scheduler") as bus:
        await bus.publish(
            DeploymentStateChanged(
                deployment_id=uuid.UUID(deployment["id"]),
                owner=deployment["owner"],
                name=deployment["name"],
                old_state=old,
                new_state=new,
                observed_at=at,
                reason=reason,
                failed=failed or [],
            )
        )


async def shown(api: Api, headers: dict, deployment: dict, **fields: object) -> dict:
    path = f"/v1/deployments/{deployment['id']}"

    async def matches() -> dict | None:
        got = (await api.client.get(path, headers=headers)).json()
        return got if all(got[k] == v for k, v in fields.items()) else None

    return await wait_until(matches, timeout=10, what=f"deployment shows {fields}")


async def test_the_read_model_follows_state_changes(api: Api, amqp_url: str) -> None:
    _owner, headers = await owner_with_accounts(api)
    deployment = (await api.deploy(headers, THREE_GROUPS, parameters={"pg": 16})).json()
    start = datetime.now(UTC)
    await publish_state(amqp_url, deployment, "requested", "creating", start)
    await shown(api, headers, deployment, state="creating")
    web_1 = deployment["groups"][2]["instances"][0]["id"]
    await publish_state(
        amqp_url,
        deployment,
        "creating",
        "degraded",
        start + timedelta(seconds=2),
        reason="web: 1 instance failed",
        failed=[uuid.UUID(web_1)],
    )
    # An older observation arriving late changes nothing.
    await publish_state(amqp_url, deployment, "requested", "creating", start + timedelta(seconds=1))
    degraded = await shown(api, headers, deployment, state="degraded")
    assert degraded["failed"] == [web_1]
    assert degraded["reason"] == "web: 1 instance failed"


async def test_a_rejected_deployment_rejects_its_members(api: Api, amqp_url: str) -> None:
    _owner, headers = await owner_with_accounts(api)
    deployment = (await api.deploy(headers, THREE_GROUPS, parameters={"pg": 16})).json()
    await publish_state(
        amqp_url,
        deployment,
        "requested",
        "rejected",
        datetime.now(UTC),
        reason="web: instances limit 3 reached",
    )
    rejected = await shown(api, headers, deployment, state="rejected")
    assert rejected["reason"] == "web: instances limit 3 reached"
    assert {m["state"] for g in rejected["groups"] for m in g["instances"]} == {"rejected"}
    one = rejected["groups"][0]["instances"][0]["id"]
    instance = (await api.client.get(f"/v1/instances/{one}", headers=headers)).json()
    assert instance["reason"] == "web: instances limit 3 reached"


async def test_a_rejected_deployment_deleted_keeps_its_reason(
    api: Api, amqp_url: str, probe: EventProbe
) -> None:
    _owner, headers = await owner_with_accounts(api)
    deployment = (await api.deploy(headers, THREE_GROUPS, parameters={"pg": 16})).json()
    path = f"/v1/deployments/{deployment['id']}"
    why = "db: memory_mb limit 1024 reached"
    start = datetime.now(UTC)
    await publish_state(amqp_url, deployment, "requested", "rejected", start, reason=why)
    await shown(api, headers, deployment, state="rejected")

    deleting = await api.client.delete(path, headers=headers)
    assert deleting.status_code == 202, deleting.text
    assert (deleting.json()["state"], deleting.json()["reason"]) == ("deleting", why)
    assert {m["state"] for g in deleting.json()["groups"] for m in g["instances"]} == {"rejected"}
    await probe.wait_for(
        "deployment.delete_requested", lambda e: e.subject == deployment["id"], timeout=10
    )
    # The scheduler ends it from rejected (its own view); bringing no reason, the one it had stays.
    later = start + timedelta(seconds=1)
    await publish_state(amqp_url, deployment, "rejected", "deleted", later)
    deleted = await shown(api, headers, deployment, state="deleted")
    assert deleted["reason"] == why
    assert {m["state"] for g in deleted["groups"] for m in g["instances"]} == {"rejected"}
    assert (await api.client.delete(path, headers=headers)).json()["state"] == "deleted"


async def test_scaling(api: Api, amqp_url: str, probe: EventProbe) -> None:
    _owner, headers = await owner_with_accounts(api)
    deployment = (await api.deploy(headers, THREE_GROUPS, parameters={"pg": 16})).json()
    path = f"/v1/deployments/{deployment['id']}/scale"
    too_early = await api.client.post(path, json={"group": "app", "count": 3}, headers=headers)
    assert too_early.status_code == 409
    assert "requested" in too_early.json()["detail"]
    await publish_state(amqp_url, deployment, "requested", "running", datetime.now(UTC))
    await shown(api, headers, deployment, state="running")

    unknown = await api.client.post(path, json={"group": "cache", "count": 3}, headers=headers)
    assert unknown.status_code == 422
    assert unknown.json()["errors"][0]["pointer"] == "/group"
    assert "cache" in unknown.json()["detail"]
    for count in (0, 101):
        bad = await api.client.post(path, json={"group": "app", "count": count}, headers=headers)
        assert bad.status_code == 422
    spread = await api.client.post(path, json={"group": "web", "count": 3}, headers=headers)
    assert spread.status_code == 422
    assert spread.json()["errors"][0]["pointer"] == "/count"
    assert "only 2" in spread.json()["detail"]

    up = await api.client.post(path, json={"group": "app", "count": 3}, headers=headers)
    assert up.status_code == 202, up.text
    app = up.json()["groups"][1]
    assert app["count"] == 3
    assert [m["name"] for m in app["instances"]] == ["shop-app-1", "shop-app-2", "shop-app-3"]
    assert [m["state"] for m in app["instances"]][1:] == ["requested", "requested"]
    (event,) = await probe.wait_for(
        "deployment.scale_requested", lambda e: e.subject == deployment["id"], timeout=10
    )
    assert event.data["count"] == 3
    assert [m["name"] for m in event.data["added"]] == ["shop-app-2", "shop-app-3"]
    assert [m["id"] for m in app["instances"]][1:] == [
        m["instance_id"] for m in event.data["added"]
    ]
    added = await api.client.get(f"/v1/instances/{app['instances'][2]['id']}", headers=headers)
    assert added.json()["deployment_id"] == deployment["id"]
    assert added.json()["group"] == "app"

    # Quota refuses the scaling: the members it would have added are rejected, the count back.
    async with connected_bus(amqp_url, source="boreas/quota") as bus:
        await bus.publish(
            DeploymentScaleRefused(
                deployment_id=uuid.UUID(deployment["id"]),
                owner=deployment["owner"],
                group="app",
                count=3,
                added=[uuid.UUID(m["instance_id"]) for m in event.data["added"]],
                reason="app: cpus limit 3 reached",
            )
        )

    async def refused() -> dict | None:
        got = (await api.client.get(f"/v1/deployments/{deployment['id']}", headers=headers)).json()
        return got if got["groups"][1]["count"] == 1 else None

    after = await wait_until(refused, timeout=10, what="the refused scaling undone")
    states = [m["state"] for m in after["groups"][1]["instances"]]
    assert states == ["requested", "rejected", "rejected"]
    rejected = await api.client.get(f"/v1/instances/{app['instances'][2]['id']}", headers=headers)
    assert rejected.json()["reason"] == "app: cpus limit 3 reached"

    # Numbering goes on from the last member ever; down asks for no new members.
    again = await api.client.post(path, json={"group": "app", "count": 2}, headers=headers)
    assert [m["name"] for m in again.json()["groups"][1]["instances"]][-1] == "shop-app-4"
    down = await api.client.post(path, json={"group": "app", "count": 1}, headers=headers)
    assert down.status_code == 202
    assert down.json()["groups"][1]["count"] == 1
    (scaled_down,) = await probe.wait_for(
        "deployment.scale_requested",
        lambda e: e.subject == deployment["id"] and e.data["count"] == 1,
        timeout=10,
    )
    assert scaled_down.data["added"] == []
    assert scaled_down.data["group"] == "app"


async def test_deleting(api: Api, amqp_url: str, probe: EventProbe) -> None:
    _owner, headers = await owner_with_accounts(api)
    deployment = (await api.deploy(headers, THREE_GROUPS, parameters={"pg": 16})).json()
    path = f"/v1/deployments/{deployment['id']}"
    start = datetime.now(UTC)
    await publish_state(amqp_url, deployment, "requested", "creating", start)
    await shown(api, headers, deployment, state="creating")

    deleting = await api.client.delete(path, headers=headers)
    assert deleting.status_code == 202, deleting.text
    assert deleting.json()["state"] == "deleting"
    assert {m["state"] for g in deleting.json()["groups"] for m in g["instances"]} == {
        "terminating"
    }
    (event,) = await probe.wait_for(
        "deployment.delete_requested", lambda e: e.subject == deployment["id"], timeout=10
    )
    assert event.data["requested_by"] == deployment["owner"]
    again = await api.client.delete(path, headers=headers)
    assert again.status_code == 202
    assert again.json()["state"] == "deleting"
    audit = await api.client.get(
        "/v1/audit", params={"action": "deployment_delete_requested"}, headers=await api.admin()
    )
    assert [e["target"] for e in audit.json()["items"]].count(deployment["id"]) == 1
    scaled = await api.client.post(
        f"{path}/scale", json={"group": "app", "count": 2}, headers=headers
    )
    assert scaled.status_code == 409

    # The orchestrator's view from before the DELETE, arriving late, does not undo it.
    await publish_state(amqp_url, deployment, "creating", "running", start + timedelta(seconds=1))
    await publish_state(amqp_url, deployment, "deleting", "deleted", start + timedelta(seconds=3))
    await publish_state(amqp_url, deployment, "running", "deleting", start + timedelta(seconds=2))
    await shown(api, headers, deployment, state="deleted")
    pool = api.app.state.runtime.pool
    in_feed = await pool.fetch(
        "SELECT envelope->'data'->>'new_state' AS state FROM event_feed "
        "WHERE topic = 'deployment.state_changed' AND owner = $1 ORDER BY seq",
        deployment["owner"],
    )
    assert [r["state"] for r in in_feed] == ["creating", "running", "deleted", "deleting"]
    assert (await api.client.get(path, headers=headers)).json()["state"] == "deleted"


async def test_members_get_their_launch_terms(api: Api, probe: EventProbe) -> None:
    owner, headers = await owner_with_accounts(api)
    admin = await api.admin()
    await api.client.put(
        f"/v1/lease-policies/{owner}", json={"default_seconds": 3600}, headers=admin
    )
    rule = {"name": f"big-{owner}", "when": {"cpus_over": 1, "owners": [owner]}}
    rules = (await api.client.get("/v1/approval-rules", headers=admin)).json()["rules"]
    put = await api.client.put("/v1/approval-rules", json={"rules": [*rules, rule]}, headers=admin)
    assert put.status_code == 200, put.text
    try:
        deployment = (await api.deploy(headers, THREE_GROUPS, parameters={"pg": 16})).json()
    finally:
        await api.client.put("/v1/approval-rules", json={"rules": rules}, headers=admin)
    (event,) = await probe.wait_for(
        "deployment.requested", lambda e: e.subject == deployment["id"], timeout=10
    )
    by_group = {m["group"]: m for m in event.data["members"]}
    assert by_group["db"]["approval_rules"] == [rule["name"]]  # 2 cpus
    assert by_group["web"]["approval_rules"] == []  # 1 cpu
    assert by_group["db"]["lease"]["on_expiry"] == "stop"
    assert event.data["approval_deadline"] is not None
    db_member = deployment["groups"][0]["instances"][0]["id"]
    web_member = deployment["groups"][2]["instances"][0]["id"]
    held = (await api.client.get(f"/v1/instances/{db_member}", headers=headers)).json()
    free = (await api.client.get(f"/v1/instances/{web_member}", headers=headers)).json()
    assert datetime.fromisoformat(held["approval_deadline"]) == datetime.fromisoformat(
        event.data["approval_deadline"]
    )
    assert free["approval_deadline"] is None
    assert held["expires_at"] is not None
