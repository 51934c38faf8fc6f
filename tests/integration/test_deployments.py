"""Deployments orchestrated by the scheduler on the real bus, database and simulated cloud.

The deployment is admitted here on the bus as quota admits it (``deployment.admitted`` with every
member), so these tests need neither the gateway's deployment routes nor quota's admission: they
show the orchestrator's part alone. A poller reports the instances' states, as in production.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

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
    InstanceAction,
    InstanceActionRequested,
    InstanceApproved,
    InstanceDenied,
    Placement,
)
from shared.runtime import ServiceRuntime
from shared.testing import EventProbe, wait_until
from tests.integration.api import Api
from tests.integration.clouds import api_shows
from tests.integration.publishing import connected_bus
from tests.integration.stack import poller_runtime, scheduler_runtime, simulator_account

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


def observed_at(event: Envelope) -> datetime:
    return datetime.fromisoformat(event.data["observed_at"])


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

    async def admit(self, held: Iterable[uuid.UUID] = ()) -> None:
        """Admitted as quota admits it (``held``: members awaiting approval)."""
        await self.publish(
            DeploymentAdmitted(
                deployment_id=self.id,
                owner=self.owner,
                name=self.name,
                template=self.template,
                members=self.members,
                held=list(held),
            )
        )

    def deletion(self) -> DeploymentDeleteRequested:
        return DeploymentDeleteRequested(
            deployment_id=self.id, owner=self.owner, requested_by=self.owner
        )

    def of(self, group_name: str) -> list[str]:
        return [str(m.instance_id) for m in self.members if m.group == group_name]

    def seen(self, topic: str, instance_ids: Iterable[str]) -> list[Envelope]:
        """The probe's ``topic`` events about these instances."""
        ids = set(instance_ids)
        return self.probe.matching(topic, lambda e: e.subject in ids)

    def changes(self, state: str | None = None) -> list[Envelope]:
        """The deployment's state changes the probe saw (to ``state`` only, if given)."""
        return [
            e
            for e in self.probe.matching("deployment.state_changed")
            if e.subject == str(self.id) and state in (None, e.data["new_state"])
        ]

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
        return observed_at(changed)

    def first_seen(self, instance_id: str) -> datetime:
        return min(observed_at(e) for e in self.seen("instance.state_changed", [instance_id]))


@dataclass(frozen=True)
class Accounts:
    """A user with two simulated-cloud accounts of their own."""

    owner: str
    headers: dict[str, str]
    first: dict
    second: dict
    keys: tuple[str, str]
    simulator_url: str

    def clouds(self, *which: int) -> list[SimulatorNodeDriver]:
        """The accounts' clouds (``which``: by index, default both)."""
        return [
            SimulatorNodeDriver(self.keys[i], "s3cret", endpoint=self.simulator_url)
            for i in which or (0, 1)
        ]

    async def live_nodes(self, *which: int) -> list[Any]:
        """Nodes not terminated on the accounts (``which``: by index, default both)."""
        nodes = [
            n for cloud in self.clouds(*which) for n in await asyncio.to_thread(cloud.list_nodes)
        ]
        return [n for n in nodes if n.extra.get("state", n.state) not in ("terminated",)]


@dataclass(frozen=True)
class Side:
    """What the tests drive: the API (for users and accounts), the probe, the bus, the
    simulated cloud, and the services that must know an account before it is used."""

    api: Api
    probe: EventProbe
    amqp_url: str
    simulator_url: str
    followers: tuple[ServiceRuntime, ...]

    async def accounts(self, **second: object) -> Accounts:
        """Two accounts for a new user (``second``: how the second one's cloud behaves)."""
        owner, headers = await self.api.new_user("alice")
        keys = (f"k-{uuid.uuid4().hex[:8]}", f"k-{uuid.uuid4().hex[:8]}")
        tag = uuid.uuid4().hex[:6]
        made = [
            await simulator_account(
                self.api,
                self.simulator_url,
                [owner],
                name=f"sim-{letter}-{tag}",
                followers=self.followers,
                api_key=key,
                **behaviour,
            )
            for letter, key, behaviour in (("a", keys[0], {}), ("b", keys[1], second))
        ]
        return Accounts(owner, headers, made[0], made[1], keys, self.simulator_url)

    def deployment(self, owner: str, template: dict) -> Deployment:
        return Deployment(self.probe, self.amqp_url, owner, template)


@pytest.fixture
def side(
    api: Api,
    scheduler: ServiceRuntime,
    poller: ServiceRuntime,
    simulator_url: str,
    probe: EventProbe,
    amqp_url: str,
) -> Side:
    return Side(api, probe, amqp_url, simulator_url, (scheduler, poller))


async def handled(runtime: ServiceRuntime, event_id: str) -> bool:
    """Whether one of the service's consumers has recorded the event in its inbox."""
    return bool(await runtime.pool.fetchval("SELECT 1 FROM inbox WHERE event_id = $1", event_id))


async def test_three_groups_start_in_dependency_order_and_spread_across_accounts(
    side: Side,
) -> None:
    accounts = await side.accounts()
    deployment = side.deployment(accounts.owner, three_tier())
    await deployment.admit()

    creating = await deployment.reaches("creating")
    assert creating.data["old_state"] == "requested" and creating.source == "boreas/scheduler"
    running = await deployment.reaches("running")
    assert running.data["name"] == deployment.name and running.data["owner"] == accounts.owner

    # Up in dependency order: each group's instances were first seen once the groups before
    # it were running.
    [db], [app], webs = deployment.of("db"), deployment.of("app"), deployment.of("web")
    db_up = await deployment.state_at(db, "running")
    app_up = await deployment.state_at(app, "running")
    assert db_up < deployment.first_seen(app) <= app_up
    for web in webs:
        assert app_up < deployment.first_seen(web) <= await deployment.state_at(web, "running")

    # Every member was launched as a member: its deployment and group, and web's spread.
    launches = {e.subject: e for e in side.probe.matching("instance.launch_admitted")}
    for m in deployment.members:
        launch = launches[str(m.instance_id)]
        assert launch.data["deployment_id"] == str(deployment.id)
        assert launch.data["group"] == m.group
        assert launch.data["spread"] == ("accounts" if m.group == "web" else None)
        assert launch.data["name"] == m.name
    placed = [e.data["account_id"] for e in deployment.seen("instance.placed", webs)]
    assert sorted(placed) == sorted([accounts.first["id"], accounts.second["id"]])


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


async def failing_deployment(side: Side, on_failure: str) -> tuple[Accounts, Deployment]:
    """A deployment whose web group is placed on the second account, where every create
    fails; admitted."""
    accounts = await side.accounts(create_failure_rate=1.0)
    template = failing_web(on_failure, accounts.second["id"])
    deployment = side.deployment(accounts.owner, template)
    await deployment.admit()
    return accounts, deployment


async def test_rollback_ends_everything_created_when_a_group_cannot_be_created(
    side: Side,
) -> None:
    accounts, deployment = await failing_deployment(side, "rollback")

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
    assert await accounts.live_nodes(0) == []
    assert accounts.first["id"] != accounts.second["id"]


async def test_keep_ends_degraded_naming_the_failed_instances(side: Side) -> None:
    accounts, deployment = await failing_deployment(side, "keep")

    degraded = await deployment.reaches("degraded")
    webs = deployment.of("web")
    assert sorted(degraded.data["failed"]) == sorted(webs)
    for web in webs:
        assert (
            f"web instance {web} failed: no candidate account could launch it"
            in (degraded.data["reason"])
        )
    # The rest keeps running.
    assert len(await accounts.live_nodes(0)) == 2
    assert not deployment.seen(
        "instance.action_requested", deployment.of("db") + deployment.of("app")
    )

    # Its owner ends the db instance: still degraded, and followers hear of the third failure.
    [db] = deployment.of("db")
    await deployment.publish(
        InstanceActionRequested(
            instance_id=uuid.UUID(db),
            owner=deployment.owner,
            action=InstanceAction.TERMINATE,
            requested_by=deployment.owner,
        )
    )
    again = await deployment.reaches("degraded", count=2)
    assert again.data["old_state"] == "degraded"
    assert sorted(again.data["failed"]) == sorted([*webs, db])
    assert f"db instance {db} failed: terminated outside its deployment" in again.data["reason"]


async def test_a_scheduler_restarted_mid_deployment_completes_it_without_duplicates(
    api: Api,
    poller: ServiceRuntime,
    simulator_url: str,
    probe: EventProbe,
    amqp_url: str,
    database_url: str,
) -> None:
    async with scheduler_runtime(amqp_url, database_url) as first:
        side = Side(api, probe, amqp_url, simulator_url, (first, poller))
        accounts = await side.accounts()
        deployment = side.deployment(accounts.owner, three_tier())
        await deployment.admit()
        # The first wave is launched (and placed); the scheduler stops before the next.
        [db] = deployment.of("db")
        await probe.wait_for("instance.placed", lambda e: e.subject == db, timeout=SETTLE)

    async with scheduler_runtime(amqp_url, database_url):
        await deployment.reaches("running")

    # Exactly the requested count on the clouds: one node per member, found by its tag.
    for m in deployment.members:
        tagged = [
            n
            for cloud in accounts.clouds()
            for n in await asyncio.to_thread(
                cloud.ex_list_nodes_tagged, BOREAS_TAG, str(m.instance_id)
            )
        ]
        assert len(tagged) == 1, f"{m.name}: {len(tagged)} nodes"
    assert len(await accounts.live_nodes()) == len(deployment.members) == 4
    assert len(deployment.changes("running")) == 1


async def test_scale_up_and_down_then_delete_ends_every_instance_in_reverse_order(
    side: Side,
) -> None:
    accounts = await side.accounts()
    owner, template = accounts.owner, three_tier()
    deployment = side.deployment(owner, template)
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
    assert not deployment.seen("instance.action_requested", [first_app])

    await deployment.publish(deployment.deletion())
    await deployment.reaches("deleting")
    await deployment.reaches("deleted")
    ended = {
        str(m.instance_id): await deployment.state_at(str(m.instance_id), "terminated")
        for m in deployment.members
    }
    # Reverse dependency order: web before app before db.
    web_ended = [ended[i] for i in deployment.of("web")]
    [db_ended] = [ended[i] for i in deployment.of("db")]
    assert max(web_ended) < ended[first_app] < db_ended
    assert await accounts.live_nodes() == []


async def test_through_the_api_a_deployment_runs_scales_and_is_deleted(
    api: Api,
    clouds_side: tuple[ServiceRuntime, ServiceRuntime],
    simulator_url: str,
    probe: EventProbe,
    amqp_url: str,
) -> None:
    """The whole path: the gateway takes the template, quota admits it as one unit, the
    scheduler orchestrates it; the API shows the deployment and its instances."""
    accounts = await Side(api, probe, amqp_url, simulator_url, clouds_side).accounts()
    headers = accounts.headers
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
            observed_at(e)
            for e in probe.matching("instance.state_changed", lambda e: e.subject == instance_id)
            if state is None or e.data["new_state"] == state
        ]

    assert max(seen(db, "running")) < min(seen(app))
    assert all(max(seen(app, "running")) < min(seen(web)) for web in webs)
    assert placed == {accounts.first["id"], accounts.second["id"]}

    async def scale(count: int) -> None:
        scaled = await api.client.post(
            f"{path}/scale", json={"group": "app", "count": count}, headers=headers
        )
        assert scaled.status_code == 202, scaled.text

    await scale(2)

    async def two_apps_running() -> list[dict] | None:
        got = (await api.client.get(path, headers=headers)).json()
        [apps] = [g["instances"] for g in got["groups"] if g["name"] == "app"]
        up = [m for m in apps if m["state"] == "running"]
        return apps if len(up) == 2 and got["state"] == "running" else None

    apps = await wait_until(two_apps_running, timeout=SETTLE, what="two app instances running")
    [added] = [m["id"] for m in apps if m["id"] != instances["app"][0]["id"]]
    await scale(1)
    await api_shows(api, headers, added, "terminated", timeout=SETTLE)

    deleted = await api.client.delete(path, headers=headers)
    assert deleted.status_code == 202, deleted.text
    await shown("deleted")
    every = [m["id"] for ms in instances.values() for m in ms] + [added]
    for instance_id in every:
        await api_shows(api, headers, instance_id, "terminated", timeout=SETTLE)
    assert await accounts.live_nodes() == []


async def test_spread_takes_each_account_once_even_when_launched_together(side: Side) -> None:
    """Three web instances spread across two accounts, launched at once: two are placed, one
    on each account, and the third fails with a reason naming the constraint."""
    accounts = await side.accounts()
    template = {"groups": [group("web", 3, [], spread="accounts")], "on_failure": "keep"}
    deployment = side.deployment(accounts.owner, template)
    await deployment.admit()

    degraded = await deployment.reaches("degraded")
    placed = deployment.seen("instance.placed", deployment.of("web"))
    assert sorted(e.data["account_id"] for e in placed) == sorted(
        [accounts.first["id"], accounts.second["id"]]
    )
    [failed] = degraded.data["failed"]
    [failure] = deployment.seen("instance.failed", [failed])
    names = ", ".join(sorted([accounts.first["name"], accounts.second["name"]]))
    assert failure.data["reason"] == (
        "spread across accounts: every account group 'web' may use already holds one of its "
        f"instances: {names}"
    )
    assert failure.data["reason"] in degraded.data["reason"]


async def test_spread_across_regions_takes_the_region_left_after_losing_one_to_a_sibling(
    side: Side,
) -> None:
    """Two instances spread across regions on two accounts that both offer north and south,
    launched at once (several deployments together, so the race is run more than once): each
    is offered north first; the one that loses north to its sibling takes south."""
    accounts = await side.accounts()
    template = {"groups": [group("web", 2, [], spread="regions")], "on_failure": "keep"}
    deployments = [side.deployment(accounts.owner, template) for _ in range(3)]
    await asyncio.gather(*(d.admit() for d in deployments))

    for deployment in deployments:
        running = await deployment.reaches("running")
        assert running.data["failed"] == [] and running.data["reason"] is None
        placed = deployment.seen("instance.placed", deployment.of("web"))
        assert sorted(e.data["region"] for e in placed) == ["north", "south"]
        assert not deployment.seen("instance.failed", deployment.of("web"))


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

    await refused_first.publish(refusal(refused_first))
    rejected = await refused_first.reaches("rejected")
    assert rejected.data["reason"] == "web: cpus limit 1 reached"
    await refused_first.publish(refused_first.deletion())
    deleted = await refused_first.reaches("deleted")
    assert deleted.data["old_state"] == "rejected" and deleted.data["name"] == refused_first.name

    await deleted_first.publish(deleted_first.deletion(), refusal(deleted_first))
    assert (await deleted_first.reaches("rejected")).data["old_state"] == "requested"
    assert (await deleted_first.reaches("deleted")).data["old_state"] == "rejected"

    # Deleted again: handled, and nothing changes.
    [again] = await refused_first.publish(refused_first.deletion())
    await wait_until(
        lambda: handled(scheduler, again.id), timeout=10, what="the second deletion handled"
    )
    for d in (refused_first, deleted_first):
        assert [e.data["new_state"] for e in d.changes()] == ["rejected", "deleted"]
    state = await scheduler.pool.fetchval(
        "SELECT state FROM deployments WHERE id = $1", refused_first.id
    )
    assert state == "deleted"


async def admitted_with_a_held_web(side: Side, owner: str) -> tuple[Deployment, uuid.UUID]:
    """db → web (two), one web instance held for approval: admitted, and its db running."""
    deployment = side.deployment(owner, {"groups": [group("db", 1, []), group("web", 2, ["db"])]})
    [held, _] = [m.instance_id for m in deployment.members if m.group == "web"]
    await deployment.admit(held=[held])
    [db] = deployment.of("db")
    await deployment.state_at(db, "running")
    return deployment, held


async def test_a_held_member_launches_once_approved_and_a_denial_rolls_back(
    side: Side,
) -> None:
    owner = (await side.accounts()).owner
    approved, held = await admitted_with_a_held_web(side, owner)
    [other] = [w for w in approved.of("web") if w != str(held)]
    await approved.state_at(other, "running")
    assert not approved.seen("instance.launch_admitted", [str(held)])
    await approved.publish(
        InstanceApproved(
            instance_id=held, owner=owner, decided_by="admin", decided_at=datetime.now(UTC)
        )
    )
    await approved.reaches("running")
    assert approved.of("web") and await approved.state_at(str(held), "running")

    denied, refused = await admitted_with_a_held_web(side, owner)
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
    [db] = denied.of("db")
    await denied.state_at(db, "terminated")
    assert not denied.seen("instance.launch_admitted", [str(refused)])


async def test_an_approval_seen_before_the_admission_still_launches_its_member(
    side: Side, scheduler: ServiceRuntime
) -> None:
    """The answer and the admission travel on different queues: an answer handled first is
    kept for the member it names."""
    owner = (await side.accounts()).owner
    deployment = side.deployment(owner, {"groups": [group("web", 1, [])]})
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
    await deployment.admit(held=[held])
    await deployment.reaches("running")
    assert not await answer_kept()
