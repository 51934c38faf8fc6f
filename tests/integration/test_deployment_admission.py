"""Deployments admitted by quota as one unit, on the real RabbitMQ and PostgreSQL: a deployment
that does not fit the owner's quota as a whole is refused whole (every member's ledger entry
rejected, nothing reserved), even under 20 concurrent deployment requests racing one smaller
launch across two quota replicas, by the count limits and by a budget alike; a redelivered
request decides nothing again; held members wait for an approval that launches nothing from
quota; scaling up is a unit too, scaling down is admitted at once.

On the bus, only quota runs: the test publishes what the gateway and the scheduler would. Then
through the API on the whole stack (the gateway, two quota replicas, the scheduler, a poller and
the simulated cloud): no instance of a rejected deployment is ever admitted, placed or created.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from services.quota import bootstrap as quota
from services.quota.repository import drift
from shared.clouds.registry import boreas_instance_of
from shared.clouds.simulator.driver import SimulatorNodeDriver
from shared.config import QuotaSettings
from shared.events import (
    DeploymentMember,
    DeploymentRequested,
    DeploymentScaleRequested,
    Envelope,
    Event,
    InstanceApproved,
    InstanceDenied,
    InstanceLaunchRequested,
    QuotaLimitsSet,
    ResourceLimits,
)
from shared.ordering import slot_of
from shared.runtime import ServiceRuntime, utcnow
from shared.testing import EventProbe, wait_until
from tests.integration.api import Api
from tests.integration.publishing import connected_bus
from tests.integration.stack import poller_runtime, scheduler_runtime, simulator_account
from tests.integration.support import settings_for

DECISIONS = ("deployment.admitted", "deployment.refused")


def quota_replica(
    amqp_url: str, database_url: str, clock: Callable[[], datetime] = utcnow
) -> ServiceRuntime:
    return quota.build(settings_for(amqp_url, database_url, QuotaSettings), clock=clock)


Publish = Callable[..., Awaitable[None]]


@asynccontextmanager
async def publisher(amqp_url: str) -> AsyncIterator[Publish]:
    async with connected_bus(amqp_url, "boreas/gateway") as bus:

        async def publish(*events: Event) -> None:
            await asyncio.gather(*(bus.publish(e) for e in events))

        yield publish


def owner_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def member(
    group: str,
    n: int,
    *,
    cpus: int = 1,
    rules: tuple[str, ...] = (),
    instance_id: uuid.UUID | None = None,
    price: float | None = None,
) -> DeploymentMember:
    return DeploymentMember(
        instance_id=instance_id or uuid.uuid4(),
        group=group,
        name=f"shop-{group}-{n}",
        image="debian-12",
        cpus=cpus,
        memory_mb=512,
        approval_rules=list(rules),
        price_per_hour=price,
    )


def shop(owner: str, *members: DeploymentMember) -> DeploymentRequested:
    """A deployment of ``members``; by default a db of 2 cpus and three web servers of one."""
    chosen = members or (
        member("db", 1, cpus=2),
        *(member("web", n) for n in (1, 2, 3)),
    )
    return DeploymentRequested(
        deployment_id=uuid.uuid4(),
        owner=owner,
        name="shop",
        template={"groups": [{"name": "db"}, {"name": "web", "after": ["db"]}]},
        members=list(chosen),
        approval_deadline=datetime.now(UTC) + timedelta(hours=1),
    )


def scaling(
    of: DeploymentRequested, count: int, *added: DeploymentMember
) -> DeploymentScaleRequested:
    return DeploymentScaleRequested(
        deployment_id=of.deployment_id,
        owner=of.owner,
        group="web",
        count=count,
        added=list(added),
        requested_by=of.owner,
    )


async def set_limits(publish: Publish, probe: EventProbe, owner: str, **limits: int) -> None:
    await publish(QuotaLimitsSet(owner=owner, limits=ResourceLimits(**limits), set_by="test"))
    await probe.wait_for(
        "quota.usage_changed",
        lambda e: (
            e.data["owner"] == owner and all(e.data["limits"][k] == v for k, v in limits.items())
        ),
        timeout=15,
    )


def decisions_of(probe: EventProbe, ids: set[str]) -> dict[str, list[Envelope]]:
    """Every decision quota published on the deployments ``ids``, by deployment id."""
    found: dict[str, list[Envelope]] = {}
    for topic in DECISIONS:
        for e in probe.matching(topic, lambda e: e.subject in ids):
            found.setdefault(e.subject or "", []).append(e)
    return found


async def ledger_of(
    runtime: ServiceRuntime, ids: list[uuid.UUID]
) -> dict[uuid.UUID, tuple[str, uuid.UUID | None, bool]]:
    rows = await runtime.pool.fetch(
        """SELECT instance_id, status, deployment_id, awaiting_approval FROM ledger
           WHERE instance_id = ANY($1::uuid[])""",
        ids,
    )
    return {
        r["instance_id"]: (r["status"], r["deployment_id"], r["awaiting_approval"]) for r in rows
    }


async def test_twenty_racing_deployments_and_a_smaller_launch_admit_whole_deployments_only(
    amqp_url: str, database_url: str, probe: EventProbe
) -> None:
    owner = owner_name("race")
    # Each deployment: 4 instances, 5 cpus; the launch: 1 instance, 2 cpus. Limits of 10
    # instances and 12 cpus fit two deployments and the launch, in whatever order they come,
    # and then part of a third (which must be refused whole).
    deployments = [shop(owner) for _ in range(20)]
    small = InstanceLaunchRequested(
        instance_id=uuid.uuid4(), owner=owner, name="vm", image="debian-12", cpus=2, memory_mb=512
    )
    ids = {str(d.deployment_id) for d in deployments}
    by_id = {str(d.deployment_id): d for d in deployments}
    async with (
        quota_replica(amqp_url, database_url) as runtime,
        quota_replica(amqp_url, database_url),  # two replicas compete on the same queues
        publisher(amqp_url) as publish,
    ):
        await set_limits(publish, probe, owner, instances=10, cpus=12)
        await publish(*deployments, small)
        await wait_until(
            lambda: len(decisions_of(probe, ids)) == 20,
            timeout=60,
            what="each of 20 deployments decided",
        )
        [launch_decision] = await probe.wait_for(
            "instance.launch_admitted", lambda e: e.subject == str(small.instance_id), timeout=30
        )
        decided = decisions_of(probe, ids)
        admitted = [k for k, es in decided.items() if es[0].topic == "deployment.admitted"]
        refused = [k for k, es in decided.items() if es[0].topic == "deployment.refused"]
        assert (len(admitted), len(refused)) == (2, 18)
        assert all(len(es) == 1 for es in decided.values())
        # The refusal names the group whose member crossed the limit first (which depends on
        # when the launch came) and the limit with the whole deployment's figures.
        reason = re.compile(
            r"^(db|web): cpus limit 12 reached: (10|12) in use or reserved, "
            r"this deployment needs 5 more$"
        )
        reasons = {decided[k][0].data["reason"] for k in refused}
        assert all(reason.match(r) for r in reasons), reasons
        for key in admitted:
            data = decided[key][0].data
            assert [m["instance_id"] for m in data["members"]] == [
                str(m.instance_id) for m in by_id[key].members
            ]
            assert data["held"] == []

        # The ledger: every member of an admitted deployment reserved, every member of a
        # refused one rejected (none reserved), each naming its deployment.
        members = [m.instance_id for d in deployments for m in d.members]
        ledger = await ledger_of(runtime, members)
        assert len(ledger) == 80
        for d in deployments:
            expected = "reserved" if str(d.deployment_id) in admitted else "rejected"
            assert {ledger[m.instance_id] for m in d.members} == {
                (expected, d.deployment_id, False)
            }
        usage = await runtime.pool.fetchrow(
            "SELECT instances, cpus, memory_mb FROM usage WHERE owner = $1", owner
        )
        assert tuple(usage) == (9, 12, 9 * 512)
        async with runtime.pool.acquire() as conn:
            assert await drift(conn, [owner]) == []
        # Quota launched nothing of any deployment: the scheduler launches admitted members.
        member_ids = {str(m) for m in members}
        assert not probe.matching("instance.launch_admitted", lambda e: e.subject in member_ids)
        assert launch_decision.data["owner"] == owner

        # Delivered again, then a scaling down of an admitted one behind them (one owner: one
        # queue, in order): nothing is decided again, the scaling down is admitted at once.
        await publish(*deployments)
        fence = scaling(by_id[admitted[0]], 1)
        await publish(fence)
        [scaled] = await probe.wait_for(
            "deployment.scale_admitted",
            lambda e: e.subject == admitted[0] and e.data["count"] == 1,
            timeout=30,
        )
        assert scaled.data["added"] == [] and scaled.data["held"] == []
        assert {k: len(es) for k, es in decisions_of(probe, ids).items()} == dict.fromkeys(ids, 1)
        assert tuple(
            await runtime.pool.fetchrow(
                "SELECT instances, cpus, memory_mb FROM usage WHERE owner = $1", owner
            )
        ) == (9, 12, 9 * 512)


async def test_racing_deployments_never_pass_the_budget_and_are_refused_whole(
    amqp_url: str, database_url: str, probe: EventProbe
) -> None:
    owner = owner_name("budget")
    mid_november = datetime(2026, 11, 15, tzinfo=UTC)  # 384 h to the month's end

    def still() -> datetime:
        return mid_november

    # Each deployment commits 480 this month (a db at 0.5/h: 192, three web servers at
    # 0.25/h: 96 each); the launch 96. A budget of 1056 fits two deployments and the launch,
    # whatever the order, and never a third.
    def priced() -> DeploymentRequested:
        webs = (member("web", n, price=0.25) for n in (1, 2, 3))
        return shop(owner, member("db", 1, price=0.5), *webs)

    deployments = [priced() for _ in range(20)]
    small = InstanceLaunchRequested(
        instance_id=uuid.uuid4(),
        owner=owner,
        name="vm",
        image="debian-12",
        cpus=1,
        memory_mb=512,
        price_per_hour=0.25,
    )
    ids = {str(d.deployment_id) for d in deployments}
    async with (
        quota_replica(amqp_url, database_url, still) as runtime,
        quota_replica(amqp_url, database_url, still),
        publisher(amqp_url) as publish,
    ):
        await publish(
            QuotaLimitsSet(owner=owner, limits=ResourceLimits(cost_per_month=1056.0), set_by="test")
        )
        await probe.wait_for(
            "quota.usage_changed",
            lambda e: e.data["owner"] == owner and e.data["limits"]["cost_per_month"] == 1056.0,
            timeout=15,
        )
        await publish(*deployments, small)
        await wait_until(
            lambda: len(decisions_of(probe, ids)) == 20, timeout=60, what="20 deployments decided"
        )
        await probe.wait_for(
            "instance.launch_admitted", lambda e: e.subject == str(small.instance_id), timeout=30
        )
        decided = decisions_of(probe, ids)
        refused = [es[0] for es in decided.values() if es[0].topic == "deployment.refused"]
        assert len(refused) == 18 and all(len(es) == 1 for es in decided.values())
        reason = re.compile(
            r"^db: cost_per_month budget 1056\.00 would be passed: (960|1056)\.00 spent or "
            r"committed this month, this deployment would add 480\.00$"
        )
        assert all(reason.match(e.data["reason"]) for e in refused), refused[0].data["reason"]
        held = await runtime.pool.fetchval(
            "SELECT count(*) FROM ledger WHERE owner = $1 AND status = 'reserved'", owner
        )
        assert held == 9
        await wait_until(
            lambda: probe.matching(
                "quota.usage_changed",
                lambda e: (
                    e.data["owner"] == owner
                    and (e.data["usage"]["instances"], e.data["usage"]["cost_this_month"])
                    == (9, 1056.0)
                ),
            ),
            timeout=15,
            what="usage of 9 instances costing 1056",
        )


def same_partition_as(instance_id: uuid.UUID) -> uuid.UUID:
    """Another instance id whose events an instance-ordered queue keeps behind
    ``instance_id``'s (the same slot)."""
    while True:
        other = uuid.uuid4()
        if slot_of(str(other)) == slot_of(str(instance_id)):
            return other


def answered(
    kind: type[InstanceApproved] | type[InstanceDenied], instance_id: uuid.UUID, owner: str
) -> InstanceApproved | InstanceDenied:
    now = datetime.now(UTC)
    if kind is InstanceApproved:
        return InstanceApproved(
            instance_id=instance_id, owner=owner, decided_by="admin", decided_at=now
        )
    return InstanceDenied(
        instance_id=instance_id,
        owner=owner,
        decided_by="admin",
        decided_at=now,
        reason="denied by admin: too big",
    )


async def usage_shows(probe: EventProbe, owner: str, instances: int) -> None:
    """Wait until the owner's latest ``quota.usage_changed`` counts ``instances``."""

    def latest() -> int | None:
        changes = probe.matching("quota.usage_changed", lambda e: e.data["owner"] == owner)
        return changes[-1].data["usage"]["instances"] if changes else None

    await wait_until(lambda: latest() == instances, timeout=15, what=f"{owner}: {instances}")


async def test_held_members_and_scaling_up_are_admitted_as_units(
    amqp_url: str, database_url: str, probe: EventProbe
) -> None:
    owner = owner_name("held")
    db = member("db", 1, cpus=16, rules=("big",))
    deployment = shop(owner, db, member("web", 1), member("web", 2))
    async with (
        quota_replica(amqp_url, database_url) as runtime,
        publisher(amqp_url) as publish,
    ):
        await set_limits(publish, probe, owner, instances=6)
        await publish(deployment)
        [admitted] = await probe.wait_for(
            "deployment.admitted", lambda e: e.subject == str(deployment.deployment_id)
        )
        assert admitted.data["held"] == [str(db.instance_id)]
        [asked] = await probe.wait_for(
            "instance.approval_requested", lambda e: e.subject == str(db.instance_id)
        )
        assert asked.data["rules"] == ["big"] and asked.data["cpus"] == 16
        assert asked.data["name"] == "shop-db-1"
        assert (await ledger_of(runtime, [db.instance_id]))[db.instance_id] == (
            "reserved",
            deployment.deployment_id,
            True,
        )
        await usage_shows(probe, owner, 3)

        # Approved (twice): the member is no longer held, and quota admits no launch of it
        # (the scheduler's orchestrator launches it). A plain held launch behind it in the same
        # queue, approved, is admitted: once that is out, the member's approvals were handled.
        await publish(answered(InstanceApproved, db.instance_id, owner))
        await publish(answered(InstanceApproved, db.instance_id, owner))
        marker = InstanceLaunchRequested(
            instance_id=same_partition_as(db.instance_id),
            owner=owner,
            name="marker",
            image="debian-12",
            cpus=1,
            memory_mb=1,
            approval_rules=["x"],
        )
        await publish(marker)
        await probe.wait_for(
            "instance.approval_requested", lambda e: e.subject == str(marker.instance_id)
        )
        await publish(answered(InstanceApproved, marker.instance_id, owner))
        await probe.wait_for(
            "instance.launch_admitted", lambda e: e.subject == str(marker.instance_id)
        )
        assert not probe.matching(
            "instance.launch_admitted", lambda e: e.subject == str(db.instance_id)
        )
        assert (await ledger_of(runtime, [db.instance_id]))[db.instance_id] == (
            "reserved",
            deployment.deployment_id,
            False,
        )

        await usage_shows(probe, owner, 4)  # the marker holds one

        # Scaling web up to 3 (one held member added) fits: 5 of 6.
        held_web = member("web", 3, rules=("big",))
        await publish(scaling(deployment, 3, held_web))
        [up] = await probe.wait_for(
            "deployment.scale_admitted", lambda e: e.subject == str(deployment.deployment_id)
        )
        assert up.data["held"] == [str(held_web.instance_id)]
        await probe.wait_for(
            "instance.approval_requested", lambda e: e.subject == str(held_web.instance_id)
        )
        await usage_shows(probe, owner, 5)

        # Up to 5 would take 7 of 6: refused whole, though one more would fit.
        too_far = [member("web", 4), member("web", 5)]
        await publish(scaling(deployment, 5, *too_far))
        [refused] = await probe.wait_for(
            "deployment.scale_refused", lambda e: e.subject == str(deployment.deployment_id)
        )
        assert refused.data["reason"] == (
            "web: instances limit 6 reached: 5 in use or reserved, scaling web to 5 needs 2 more"
        )
        assert refused.data["added"] == [str(m.instance_id) for m in too_far]
        ledger = await ledger_of(runtime, [m.instance_id for m in too_far])
        assert {v[0] for v in ledger.values()} == {"rejected"}

        # The held member added by scaling denied: its room is released.
        await publish(answered(InstanceDenied, held_web.instance_id, owner))
        await usage_shows(probe, owner, 4)
        assert (await ledger_of(runtime, [held_web.instance_id]))[held_web.instance_id] == (
            "released",
            deployment.deployment_id,
            False,
        )


# -- through the API, on the whole stack ----------------------------------------------------------

SETTLE = 90  # seconds for every deployment to be decided and the admitted ones to run


def tier(account_id: str) -> dict[str, Any]:
    """A db of 2 cpus, then three web servers of one: 4 instances, 5 cpus."""
    common = {"image": "debian-12", "memory_mb": 512, "placement": {"account": account_id}}
    return {
        "groups": [
            {"name": "db", "count": 1, "cpus": 2, **common},
            {"name": "web", "count": 3, "cpus": 1, "after": ["db"], **common},
        ],
        "on_failure": "rollback",
    }


def states_of(probe: EventProbe, ids: set[str]) -> dict[str, list[str]]:
    """The states each of the deployments ``ids`` went through, in order."""
    found: dict[str, list[str]] = {}
    for e in probe.matching("deployment.state_changed", lambda e: e.subject in ids):
        found.setdefault(e.subject or "", []).append(e.data["new_state"])
    return found


async def test_through_the_api_no_instance_of_a_rejected_deployment_is_ever_created(
    api: Api, amqp_url: str, database_url: str, simulator_url: str, probe: EventProbe
) -> None:
    owner, headers = await api.new_user("racer")
    admin = await api.admin()
    api_key = f"k-{uuid.uuid4().hex[:8]}"
    async with (
        quota_replica(amqp_url, database_url),
        quota_replica(amqp_url, database_url),  # two replicas compete on the same queues
        scheduler_runtime(amqp_url, database_url) as scheduler,
        poller_runtime(amqp_url, database_url) as poller,
    ):
        account = await simulator_account(
            api, simulator_url, [owner], followers=(scheduler, poller), api_key=api_key
        )
        put = await api.client.put(
            f"/v1/quotas/{owner}",
            json={"instances": 10, "cpus": 12, "memory_mb": None},
            headers=admin,
        )
        assert put.status_code == 200, put.text
        await probe.wait_for(
            "quota.usage_changed",
            lambda e: e.data["owner"] == owner and e.data["limits"]["cpus"] == 12,
            timeout=15,
        )

        # 20 deployments of 4 instances and 5 cpus, racing one launch of 2 cpus: two
        # deployments and the launch fit (9 instances, 12 cpus), whatever the order.
        template = tier(account["id"])
        responses = await asyncio.gather(
            *(api.deploy(headers, template, name=f"shop{i}") for i in range(20)),
            api.launch(
                headers, name="solo", cpus=2, memory_mb=512, placement={"account": account["id"]}
            ),
        )
        assert {r.status_code for r in responses} == {202}, [r.text for r in responses]
        launched = responses[-1].json()["id"]
        created = {r.json()["id"]: r.json() for r in responses[:-1]}
        ids = set(created)

        def settled() -> bool:
            states = states_of(probe, ids)
            return len(states) == 20 and all(
                s[-1] in ("rejected", "running", "failed") for s in states.values()
            )

        await wait_until(settled, timeout=SETTLE, what="every deployment rejected or running")
        states = states_of(probe, ids)
        running = {k for k, s in states.items() if s[-1] == "running"}
        rejected = {k for k, s in states.items() if s == ["rejected"]}
        assert (len(running), len(rejected)) == (2, 18), states
        await probe.wait_for(
            "instance.state_changed",
            lambda e: e.subject == launched and e.data["new_state"] == "running",
            timeout=SETTLE,
        )

        # The API: each rejected deployment says why, and so do its instances.
        reason = re.compile(
            r"^(db|web): cpus limit 12 reached: (10|12) in use or reserved, "
            r"this deployment needs 5 more$"
        )
        rejected_members: set[str] = set()
        for key in rejected:
            shown = (await api.client.get(f"/v1/deployments/{key}", headers=headers)).json()
            assert shown["state"] == "rejected" and reason.match(shown["reason"]), shown
            members = [i for g in shown["groups"] for i in g["instances"]]
            assert len(members) == 4
            assert {i["state"] for i in members} == {"rejected"}, members
            rejected_members |= {i["id"] for i in members}
        for key in running:
            shown = (await api.client.get(f"/v1/deployments/{key}", headers=headers)).json()
            assert {i["state"] for g in shown["groups"] for i in g["instances"]} == {"running"}

        # No instance of a rejected deployment was ever admitted, placed or created.
        for topic in ("instance.launch_admitted", "instance.placed", "instance.state_changed"):
            seen = probe.matching(topic, lambda e: e.subject in rejected_members)
            assert seen == [], f"{topic}: {[e.subject for e in seen]}"
        cloud = SimulatorNodeDriver(api_key, "s3cret", endpoint=simulator_url)
        on_cloud = {boreas_instance_of(n) for n in await asyncio.to_thread(cloud.list_nodes)}
        assert len(on_cloud) == 9 and launched in on_cloud
        assert not on_cloud & rejected_members
        quota_shown = (await api.client.get(f"/v1/quotas/{owner}", headers=headers)).json()
        assert (quota_shown["usage"]["instances"], quota_shown["usage"]["cpus"]) == (9, 12)
