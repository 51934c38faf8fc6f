"""Deployments orchestrated by the scheduler on the real bus, database and simulated cloud.

The deployment is admitted here on the bus as quota admits it (``deployment.admitted`` with every
member), so these tests need neither the gateway's deployment routes nor quota's admission: they
show the orchestrator's part alone. A poller reports the instances' states, as in production.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from shared.clouds.registry import BOREAS_TAG
from shared.clouds.simulator.driver import SimulatorNodeDriver
from shared.events import (
    DeploymentAdmitted,
    DeploymentDeleteRequested,
    DeploymentMember,
    DeploymentRefused,
    DeploymentScaleAdmitted,
    Envelope,
    InstanceApproved,
    InstanceDenied,
    Placement,
)
from shared.runtime import ServiceRuntime
from shared.testing import EventProbe, wait_until
from tests.infra import Infrastructure
from tests.integration.api import Api
from tests.integration.clouds import api_shows
from tests.integration.publishing import connected_bus
from tests.integration.stack import poller_runtime, scheduler_runtime, simulator_account
from tests.system import ADMIN_PASSWORD, add_simulator_accounts, login, new_user, running_system

SETTLE = 60  # seconds for a deployment to reach a state on the simulated cloud


@pytest.fixture
async def poller(amqp_url: str, database_url: str) -> AsyncIterator[ServiceRuntime]:
    async with poller_runtime(amqp_url, database_url) as runtime:
        yield runtime


@pytest.fixture
async def scheduler(amqp_url: str, database_url: str) -> AsyncIterator[ServiceRuntime]:
    async with scheduler_runtime(amqp_url, database_url) as runtime:
        yield runtime


def group(name: str, count: int, after: list[str], **more: Any) -> dict[str, Any]:
    return {
        "name": name,
        "count": count,
        "image": "debian-12",
        "cpus": 1,
        "memory_mb": 1024,
        "after": after,
        "placement": {"provider": "simulator"},
        **more,
    }


def three_tier(on_failure: str = "rollback", **web: Any) -> dict[str, Any]:
    """db → app → web, web two instances spread across accounts."""
    return {
        "groups": [
            group("db", 1, []),
            group("app", 1, ["db"]),
            group("web", 2, ["app"], spread="accounts", **web),
        ],
        "on_failure": on_failure,
    }


def members_of(name: str, template: dict[str, Any], first: int = 0) -> list[DeploymentMember]:
    return [
        member(name, g, n) for g in template["groups"] for n in range(first, first + g["count"])
    ]


def member(name: str, g: dict[str, Any], n: int) -> DeploymentMember:
    return DeploymentMember(
        instance_id=uuid.uuid4(),
        group=g["name"],
        name=f"{name}-{g['name']}-{n}",
        image=g["image"],
        cpus=g["cpus"],
        memory_mb=g["memory_mb"],
        placement=Placement(**g.get("placement", {})),
        spread=g.get("spread"),
    )


class Deployment:
    """A deployment admitted on the bus, and what the probe saw of it."""

    def __init__(self, probe: EventProbe, amqp_url: str, owner: str, template: dict) -> None:
        self.probe, self.amqp_url, self.owner, self.template = probe, amqp_url, owner, template
        self.id = uuid.uuid4()
        self.name = f"shop-{self.id.hex[:6]}"
        self.members = members_of(self.name, template)

    async def publish(self, *events: Any) -> list[Envelope]:
        async with connected_bus(self.amqp_url, source="boreas/quota") as bus:
            return [await bus.publish(event) for event in events]

    async def admit(self) -> None:
        await self.publish(
            DeploymentAdmitted(
                deployment_id=self.id,
                owner=self.owner,
                name=self.name,
                template=self.template,
                members=self.members,
            )
        )

    def of(self, group_name: str) -> list[str]:
        return [str(m.instance_id) for m in self.members if m.group == group_name]

    async def reaches(self, state: str, count: int = 1) -> Envelope:
        changes = await self.probe.wait_for(
            "deployment.state_changed",
            lambda e: e.subject == str(self.id) and e.data["new_state"] == state,
            count=count,
            timeout=SETTLE,
        )
        return changes[-1]

    async def state_at(self, instance_id: str, state: str) -> datetime:
        [changed] = await self.probe.wait_for(
            "instance.state_changed",
            lambda e: e.subject == instance_id and e.data["new_state"] == state,
            timeout=SETTLE,
        )
        return datetime.fromisoformat(changed.data["observed_at"])

    def first_seen(self, instance_id: str) -> datetime:
        return min(
            datetime.fromisoformat(e.data["observed_at"])
            for e in self.probe.matching(
                "instance.state_changed", lambda e: e.subject == instance_id
            )
        )


async def two_accounts(
    api: Api, simulator_url: str, followers: tuple[ServiceRuntime, ...], **second: object
) -> tuple[str, dict, dict, str, str, dict]:
    """A user with two simulated-cloud accounts of their own: (user, first, second, the
    accounts' api keys, the user's headers)."""
    owner, headers = await api.new_user("alice")
    keys = [f"k-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    tag = uuid.uuid4().hex[:6]
    first = await simulator_account(
        api, simulator_url, [owner], name=f"sim-a-{tag}", followers=followers, api_key=keys[0]
    )
    other = await simulator_account(
        api,
        simulator_url,
        [owner],
        name=f"sim-b-{tag}",
        followers=followers,
        api_key=keys[1],
        **second,
    )
    return owner, first, other, keys[0], keys[1], headers


async def live_nodes(simulator_url: str, api_key: str) -> list[Any]:
    cloud = SimulatorNodeDriver(api_key, "s3cret", endpoint=simulator_url)
    nodes = await asyncio.to_thread(cloud.list_nodes)
    return [n for n in nodes if n.extra.get("state", n.state) not in ("terminated",)]


async def test_three_groups_start_in_dependency_order_and_spread_across_accounts(
    api: Api,
    scheduler: ServiceRuntime,
    poller: ServiceRuntime,
    simulator_url: str,
    probe: EventProbe,
    amqp_url: str,
) -> None:
    owner, first, second, *_ = await two_accounts(api, simulator_url, (scheduler, poller))
    deployment = Deployment(probe, amqp_url, owner, three_tier())
    await deployment.admit()

    creating = await deployment.reaches("creating")
    assert creating.data["old_state"] == "requested" and creating.source == "boreas/scheduler"
    running = await deployment.reaches("running")
    assert running.data["name"] == deployment.name and running.data["owner"] == owner

    # Up in dependency order: each group's instances were first seen once the groups before
    # it were running.
    [db], [app], webs = deployment.of("db"), deployment.of("app"), deployment.of("web")
    db_up = await deployment.state_at(db, "running")
    app_up = await deployment.state_at(app, "running")
    assert db_up < deployment.first_seen(app) <= app_up
    for web in webs:
        assert app_up < deployment.first_seen(web) <= await deployment.state_at(web, "running")

    # Every member was launched as a member: its deployment and group, and web's spread.
    launches = {e.subject: e for e in probe.matching("instance.launch_admitted")}
    for m in deployment.members:
        launch = launches[str(m.instance_id)]
        assert launch.data["deployment_id"] == str(deployment.id)
        assert launch.data["group"] == m.group
        assert launch.data["spread"] == ("accounts" if m.group == "web" else None)
        assert launch.data["name"] == m.name
    placed = {
        e.subject: e.data["account_id"]
        for e in probe.matching("instance.placed", lambda e: e.subject in webs)
    }
    assert sorted(placed.values()) == sorted([first["id"], second["id"]])


def failing_web(on_failure: str, bad_account: str) -> dict[str, Any]:
    """db → app → web, web's two instances on an account whose cloud fails every create."""
    return {
        "groups": [
            group("db", 1, []),
            group("app", 1, ["db"]),
            group("web", 2, ["app"], placement={"account": bad_account}),
        ],
        "on_failure": on_failure,
    }


async def test_rollback_ends_everything_created_when_a_group_cannot_be_created(
    api: Api,
    scheduler: ServiceRuntime,
    poller: ServiceRuntime,
    simulator_url: str,
    probe: EventProbe,
    amqp_url: str,
) -> None:
    owner, good, bad, good_key, *_ = await two_accounts(
        api, simulator_url, (scheduler, poller), create_failure_rate=1.0
    )
    deployment = Deployment(probe, amqp_url, owner, failing_web("rollback", bad["id"]))
    await deployment.admit()

    failed = await deployment.reaches("failed")
    webs = deployment.of("web")
    assert failed.data["old_state"] == "creating"
    # The first web instance to fail starts the rollback; the other may fail before or after
    # it is asked to end.
    assert failed.data["failed"] and set(failed.data["failed"]) <= set(webs)
    assert "web instance" in failed.data["reason"]
    assert "simulated outage: create failed" in failed.data["reason"]
    # What was created is gone: db and app terminated, nothing left on the working account.
    for instance_id in deployment.of("db") + deployment.of("app"):
        await deployment.state_at(instance_id, "terminated")
    assert await live_nodes(simulator_url, good_key) == []
    assert good["id"] != bad["id"]


async def test_keep_ends_degraded_naming_the_failed_instances(
    api: Api,
    scheduler: ServiceRuntime,
    poller: ServiceRuntime,
    simulator_url: str,
    probe: EventProbe,
    amqp_url: str,
) -> None:
    owner, _, bad, good_key, *_ = await two_accounts(
        api, simulator_url, (scheduler, poller), create_failure_rate=1.0
    )
    deployment = Deployment(probe, amqp_url, owner, failing_web("keep", bad["id"]))
    await deployment.admit()

    degraded = await deployment.reaches("degraded")
    webs = deployment.of("web")
    assert sorted(degraded.data["failed"]) == sorted(webs)
    for web in webs:
        assert (
            f"web instance {web} failed: no candidate account could launch it"
            in (degraded.data["reason"])
        )
    # The rest keeps running.
    assert len(await live_nodes(simulator_url, good_key)) == 2
    assert not probe.matching(
        "instance.action_requested",
        lambda e: e.subject in deployment.of("db") + deployment.of("app"),
    )


async def test_a_scheduler_restarted_mid_deployment_completes_it_without_duplicates(
    api: Api,
    poller: ServiceRuntime,
    simulator_url: str,
    probe: EventProbe,
    amqp_url: str,
    database_url: str,
) -> None:
    deployment: Deployment | None = None
    async with scheduler_runtime(amqp_url, database_url) as first:
        owner, _, _, key_a, key_b, _ = await two_accounts(api, simulator_url, (first, poller))
        deployment = Deployment(probe, amqp_url, owner, three_tier())
        await deployment.admit()
        # The first wave is launched (and placed); the scheduler stops before the next.
        [db] = deployment.of("db")
        await probe.wait_for("instance.placed", lambda e: e.subject == db, timeout=SETTLE)

    async with scheduler_runtime(amqp_url, database_url):
        await deployment.reaches("running")

    # Exactly the requested count on the clouds: one node per member, found by its tag.
    clouds = [SimulatorNodeDriver(k, "s3cret", endpoint=simulator_url) for k in (key_a, key_b)]
    for m in deployment.members:
        tagged = [
            n
            for cloud in clouds
            for n in await asyncio.to_thread(
                cloud.ex_list_nodes_tagged, BOREAS_TAG, str(m.instance_id)
            )
        ]
        assert len(tagged) == 1, f"{m.name}: {len(tagged)} nodes"
    live = await live_nodes(simulator_url, key_a) + await live_nodes(simulator_url, key_b)
    assert len(live) == len(deployment.members) == 4
    assert (
        len(
            probe.matching(
                "deployment.state_changed",
                lambda e: e.subject == str(deployment.id) and e.data["new_state"] == "running",
            )
        )
        == 1
    )


async def test_scale_up_and_down_then_delete_ends_every_instance_in_reverse_order(
    api: Api,
    scheduler: ServiceRuntime,
    poller: ServiceRuntime,
    simulator_url: str,
    probe: EventProbe,
    amqp_url: str,
) -> None:
    owner, _, _, key_a, key_b, _ = await two_accounts(api, simulator_url, (scheduler, poller))
    template = three_tier()
    deployment = Deployment(probe, amqp_url, owner, template)
    await deployment.admit()
    await deployment.reaches("running")

    # Up: a second app instance, admitted like a launch, comes up and the deployment runs again.
    [app_group] = [g for g in template["groups"] if g["name"] == "app"]
    added = member(deployment.name, app_group, 1)
    deployment.members.append(added)
    await deployment.publish(
        DeploymentScaleAdmitted(
            deployment_id=deployment.id, owner=owner, group="app", count=2, added=[added]
        )
    )
    await deployment.state_at(str(added.instance_id), "running")
    await deployment.reaches("running", count=2)

    # Down: the newest app instance is the one ended.
    await deployment.publish(
        DeploymentScaleAdmitted(deployment_id=deployment.id, owner=owner, group="app", count=1)
    )
    await deployment.state_at(str(added.instance_id), "terminated")
    [first_app, _] = deployment.of("app")
    assert not probe.matching("instance.action_requested", lambda e: e.subject == first_app)

    await deployment.publish(
        DeploymentDeleteRequested(deployment_id=deployment.id, owner=owner, requested_by=owner)
    )
    await deployment.reaches("deleting")
    await deployment.reaches("deleted")
    ended = {
        m.instance_id: await deployment.state_at(str(m.instance_id), "terminated")
        for m in deployment.members
    }
    # Reverse dependency order: web before app before db.
    web_ended = [ended[uuid.UUID(i)] for i in deployment.of("web")]
    app_ended = ended[uuid.UUID(first_app)]
    [db_ended] = [ended[uuid.UUID(i)] for i in deployment.of("db")]
    assert max(web_ended) < app_ended < db_ended
    assert await live_nodes(simulator_url, key_a) == []
    assert await live_nodes(simulator_url, key_b) == []


async def test_through_the_api_a_deployment_runs_scales_and_is_deleted(
    api: Api,
    clouds_side: tuple[ServiceRuntime, ServiceRuntime],
    simulator_url: str,
    probe: EventProbe,
) -> None:
    """The whole path: the gateway takes the template, quota admits it as one unit, the
    scheduler orchestrates it; the API shows the deployment and its instances."""
    _, first, second, key_a, key_b, headers = await two_accounts(api, simulator_url, clouds_side)
    created = await api.deploy(headers, three_tier(), name=f"shop-{uuid.uuid4().hex[:6]}")
    assert created.status_code == 202, created.text
    deployment = created.json()
    assert deployment["state"] == "requested"
    path = f"/v1/deployments/{deployment['id']}"

    async def shown(state: str) -> dict:
        async def read() -> dict | None:
            got = (await api.client.get(path, headers=headers)).json()
            return got if got["state"] == state else None

        return await wait_until(read, timeout=SETTLE, what=f"the deployment shows {state}")

    running = await shown("running")
    instances = {g["name"]: g["instances"] for g in running["groups"]}
    assert {name: len(ids) for name, ids in instances.items()} == {"db": 1, "app": 1, "web": 2}
    for name, members in instances.items():
        for m in members:
            got = (await api.client.get(f"/v1/instances/{m['id']}", headers=headers)).json()
            assert got["deployment_id"] == deployment["id"] and got["group"] == name
            assert got["state"] == "running"
    webs = [m["id"] for m in instances["web"]]
    placed = {e.data["account_id"] for e in probe.matching("instance.placed") if e.subject in webs}
    # Up in dependency order, by the instances' state_changed times.
    [db], [app] = (m["id"] for m in instances["db"]), (m["id"] for m in instances["app"])

    def seen(instance_id: str, state: str | None = None) -> list[datetime]:
        return [
            datetime.fromisoformat(e.data["observed_at"])
            for e in probe.matching("instance.state_changed", lambda e: e.subject == instance_id)
            if state is None or e.data["new_state"] == state
        ]

    assert max(seen(db, "running")) < min(seen(app))
    assert all(max(seen(app, "running")) < min(seen(web)) for web in webs)
    assert placed == {first["id"], second["id"]}

    scaled = await api.client.post(
        f"{path}/scale", json={"group": "app", "count": 2}, headers=headers
    )
    assert scaled.status_code == 202, scaled.text

    async def two_apps_running() -> list[dict] | None:
        got = (await api.client.get(path, headers=headers)).json()
        [apps] = [g["instances"] for g in got["groups"] if g["name"] == "app"]
        up = [m for m in apps if m["state"] == "running"]
        return apps if len(up) == 2 and got["state"] == "running" else None

    apps = await wait_until(two_apps_running, timeout=SETTLE, what="two app instances running")
    [added] = [m["id"] for m in apps if m["id"] != instances["app"][0]["id"]]
    scaled = await api.client.post(
        f"{path}/scale", json={"group": "app", "count": 1}, headers=headers
    )
    assert scaled.status_code == 202, scaled.text
    await api_shows(api, headers, added, "terminated", timeout=SETTLE)

    deleted = await api.client.delete(path, headers=headers)
    assert deleted.status_code == 202, deleted.text
    await shown("deleted")
    every = [m["id"] for ms in instances.values() for m in ms] + [added]
    for instance_id in every:
        await api_shows(api, headers, instance_id, "terminated", timeout=SETTLE)
    assert await live_nodes(simulator_url, key_a) == []
    assert await live_nodes(simulator_url, key_b) == []


async def test_spread_takes_each_account_once_even_when_launched_together(
    api: Api,
    scheduler: ServiceRuntime,
    poller: ServiceRuntime,
    simulator_url: str,
    probe: EventProbe,
    amqp_url: str,
) -> None:
    """Three web instances spread across two accounts, launched at once: two are placed, one
    on each account, and the third fails with a reason naming the constraint."""
    owner, first, second, *_ = await two_accounts(api, simulator_url, (scheduler, poller))
    template = {"groups": [group("web", 3, [], spread="accounts")], "on_failure": "keep"}
    deployment = Deployment(probe, amqp_url, owner, template)
    await deployment.admit()

    degraded = await deployment.reaches("degraded")
    webs = deployment.of("web")
    placed = probe.matching("instance.placed", lambda e: e.subject in webs)
    assert sorted(e.data["account_id"] for e in placed) == sorted([first["id"], second["id"]])
    [failed] = degraded.data["failed"]
    [failure] = probe.matching("instance.failed", lambda e: e.subject == failed)
    names = ", ".join(sorted([first["name"], second["name"]]))
    assert failure.data["reason"] == (
        "spread across accounts: every account group 'web' may use already holds one of its "
        f"instances: {names}"
    )
    assert failure.data["reason"] in degraded.data["reason"]


async def test_spread_across_regions_takes_the_region_left_after_losing_one_to_a_sibling(
    api: Api,
    scheduler: ServiceRuntime,
    poller: ServiceRuntime,
    simulator_url: str,
    probe: EventProbe,
    amqp_url: str,
) -> None:
    """Two instances spread across regions on two accounts that both offer north and south,
    launched at once (several deployments together, so the race is run more than once): each
    is offered north first; the one that loses north to its sibling takes south."""
    owner, *_ = await two_accounts(api, simulator_url, (scheduler, poller))
    template = {"groups": [group("web", 2, [], spread="regions")], "on_failure": "keep"}
    deployments = [Deployment(probe, amqp_url, owner, template) for _ in range(3)]
    await asyncio.gather(*(d.admit() for d in deployments))

    for deployment in deployments:
        running = await deployment.reaches("running")
        assert running.data["failed"] == [] and running.data["reason"] is None
        webs = deployment.of("web")
        placed = probe.matching("instance.placed", lambda e, webs=webs: e.subject in webs)
        assert sorted(e.data["region"] for e in placed) == ["north", "south"]
    every = {i for d in deployments for i in d.of("web")}
    assert not probe.matching("instance.failed", lambda e: e.subject in every)


async def test_a_rejected_deployment_deleted_ends_deleted_whichever_comes_first(
    scheduler: ServiceRuntime, probe: EventProbe, amqp_url: str
) -> None:
    """The gateway shows a deleted deployment ``deleting`` at once: the orchestrator ends a
    rejected one ``deleted``, whether the refusal or the deletion reaches it first, and a
    deletion of a deleted deployment changes nothing."""
    template = {"groups": [group("web", 1, [])]}
    refused_first, deleted_first = (
        Deployment(probe, amqp_url, "alice", template) for _ in range(2)
    )

    def refusal(d: Deployment) -> DeploymentRefused:
        return DeploymentRefused(
            deployment_id=d.id, owner=d.owner, name=d.name, reason="web: cpus limit 1 reached"
        )

    def deletion(d: Deployment) -> DeploymentDeleteRequested:
        return DeploymentDeleteRequested(deployment_id=d.id, owner=d.owner, requested_by="alice")

    await refused_first.publish(refusal(refused_first))
    rejected = await refused_first.reaches("rejected")
    assert rejected.data["reason"] == "web: cpus limit 1 reached"
    await refused_first.publish(deletion(refused_first))
    deleted = await refused_first.reaches("deleted")
    assert deleted.data["old_state"] == "rejected" and deleted.data["name"] == refused_first.name

    await deleted_first.publish(deletion(deleted_first))
    await deleted_first.publish(refusal(deleted_first))
    assert (await deleted_first.reaches("rejected")).data["old_state"] == "requested"
    assert (await deleted_first.reaches("deleted")).data["old_state"] == "rejected"

    # Deleted again: handled, and nothing changes.
    [again] = await refused_first.publish(deletion(refused_first))

    async def handled() -> bool:
        return bool(
            await scheduler.pool.fetchval("SELECT 1 FROM inbox WHERE event_id = $1", again.id)
        )

    await wait_until(handled, timeout=10, what="the second deletion handled")
    for d in (refused_first, deleted_first):
        changes = probe.matching("deployment.state_changed", lambda e, d=d: e.subject == str(d.id))
        assert [e.data["new_state"] for e in changes] == ["rejected", "deleted"]
    state = await scheduler.pool.fetchval(
        "SELECT state FROM deployments WHERE id = $1", refused_first.id
    )
    assert state == "deleted"


async def test_a_held_member_launches_once_approved_and_a_denial_rolls_back(
    api: Api,
    scheduler: ServiceRuntime,
    poller: ServiceRuntime,
    simulator_url: str,
    probe: EventProbe,
    amqp_url: str,
) -> None:
    owner, *_ = await two_accounts(api, simulator_url, (scheduler, poller))
    template = {"groups": [group("db", 1, []), group("web", 2, ["db"])]}
    approved = Deployment(probe, amqp_url, owner, template)
    [held, _] = [m.instance_id for m in approved.members if m.group == "web"]
    await approved.publish(
        DeploymentAdmitted(
            deployment_id=approved.id,
            owner=owner,
            name=approved.name,
            template=template,
            members=approved.members,
            held=[held],
        )
    )
    [db] = approved.of("db")
    await approved.state_at(db, "running")
    [other] = [w for w in approved.of("web") if w != str(held)]
    await approved.state_at(other, "running")
    assert not probe.matching("instance.launch_admitted", lambda e: e.subject == str(held))
    await approved.publish(
        InstanceApproved(
            instance_id=held, owner=owner, decided_by="admin", decided_at=datetime.now(UTC)
        )
    )
    await approved.reaches("running")
    assert approved.of("web") and await approved.state_at(str(held), "running")

    denied = Deployment(probe, amqp_url, owner, template)
    [refused, _] = [m.instance_id for m in denied.members if m.group == "web"]
    await denied.publish(
        DeploymentAdmitted(
            deployment_id=denied.id,
            owner=owner,
            name=denied.name,
            template=template,
            members=denied.members,
            held=[refused],
        )
    )
    [db] = denied.of("db")
    await denied.state_at(db, "running")
    await denied.publish(
        InstanceDenied(
            instance_id=refused,
            owner=owner,
            decided_by="admin",
            decided_at=datetime.now(UTC),
            reason="denied: too dear",
        )
    )
    failed = await denied.reaches("failed")
    assert failed.data["failed"] == [str(refused)]
    assert "denied by admin: denied: too dear" in failed.data["reason"]
    await denied.state_at(db, "terminated")
    assert not probe.matching("instance.launch_admitted", lambda e: e.subject == str(refused))


async def test_an_approval_seen_before_the_admission_still_launches_its_member(
    api: Api,
    scheduler: ServiceRuntime,
    poller: ServiceRuntime,
    simulator_url: str,
    probe: EventProbe,
    amqp_url: str,
) -> None:
    """The answer and the admission travel on different queues: an answer handled first is
    kept for the member it names."""
    owner, *_ = await two_accounts(api, simulator_url, (scheduler, poller))
    template = {"groups": [group("web", 1, [])]}
    deployment = Deployment(probe, amqp_url, owner, template)
    [held] = [m.instance_id for m in deployment.members]
    await deployment.publish(
        InstanceApproved(
            instance_id=held, owner=owner, decided_by="admin", decided_at=datetime.now(UTC)
        )
    )

    async def answer_kept() -> bool:
        return bool(
            await scheduler.pool.fetchval(
                "SELECT 1 FROM early_answers WHERE instance_id = $1", held
            )
        )

    await wait_until(answer_kept, timeout=10, what="the early answer kept")
    await deployment.publish(
        DeploymentAdmitted(
            deployment_id=deployment.id,
            owner=owner,
            name=deployment.name,
            template=template,
            members=deployment.members,
            held=[held],
        )
    )
    await deployment.reaches("running")
    assert not await answer_kept()


async def test_a_scheduler_killed_while_creating_a_group_completes_it_without_duplicates(
    infra: Infrastructure, tmp_path: Path
) -> None:
    """kill -9, as processes: the scheduler dies while the cloud is making web's nodes (it
    answers a create a second after making the node); started again, it completes the
    deployment with one node per member."""
    env = {"BOREAS_CLOUD_CALL_LEASE": "3", "BOREAS_POLL_INTERVAL": "0.5"}
    with (
        infra.isolated() as (amqp_url, database_url),
        running_system(amqp_url, database_url, tmp_path / "logs", env=env) as system,
    ):
        db = await asyncpg.connect(database_url)
        async with httpx.AsyncClient(base_url=system.gateway_url, timeout=30) as client:
            admin = await login(client, "admin", ADMIN_PASSWORD)
            carol = await new_user(client, admin, "carol", "carol-password")
            await add_simulator_accounts(
                client,
                admin,
                system,
                2,
                simulator={"api_latency": 1.0, "timings": {"boot": 0}},
                poll_interval=0.5,
                grants=("carol",),
            )
            created = await client.post(
                "/v1/deployments", json={"name": "shop", "template": three_tier()}, headers=carol
            )
            assert created.status_code == 202, created.text
            path = f"/v1/deployments/{created.json()['id']}"
            groups = (await client.get(path, headers=carol)).json()["groups"]
            members = {g["name"]: [m["id"] for m in g["instances"]] for g in groups}
            every = [i for ids in members.values() for i in ids]

            async def nodes() -> dict[str, int]:
                rows = await db.fetch(
                    """SELECT tags->>'boreas-instance' AS id, count(*) AS n FROM simulator.nodes
                       WHERE tags->>'boreas-instance' = ANY($1) GROUP BY 1""",
                    every,
                )
                return {r["id"]: r["n"] for r in rows}

            async def a_web_node_made() -> bool:
                return bool(set(await nodes()) & set(members["web"]))

            await wait_until(a_web_node_made, timeout=60, interval=0.02, what="a web node made")
            system.kill("scheduler")
            system.start("scheduler", index=0)

            async def running() -> bool:
                return (await client.get(path, headers=carol)).json()["state"] == "running"

            await wait_until(running, timeout=90, what="the deployment running")
            assert await nodes() == dict.fromkeys(every, 1)
            # The node the killed scheduler was waiting for was found by its tag, not remade.
            reasons = [
                (await client.get(f"/v1/instances/{i}", headers=carol)).json()["reason"] or ""
                for i in members["web"]
            ]
            assert any("created by an earlier attempt" in r for r in reasons), reasons
        await db.close()
