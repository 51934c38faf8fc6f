"""admit_deployments with a fake unit of work and a fake repository: a deployment's members (or a
scaling's added ones) are reserved together or refused together, each with its ledger entry; no
member's launch is admitted by quota; redeliveries decide nothing again."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from prometheus_client import REGISTRY

from services.quota.accounting import Amounts, Entry, Limits, Status
from services.quota.deployments import admit_deployments
from shared.events import (
    DeploymentAdmitted,
    DeploymentMember,
    DeploymentRefused,
    DeploymentRequested,
    DeploymentScaleAdmitted,
    DeploymentScaleRefused,
    DeploymentScaleRequested,
    Event,
    InstanceApprovalRequested,
    InstanceLaunchAdmitted,
    Lease,
    QuotaUsageChanged,
)
from tests.fakes import FakeBatchUnitOfWork, FakeDecisionsRepository, received
from tests.unit import test_quota_handlers as launches

# A unit of work and a repository on its connection, as for launches (fixtures), and of_type.
uow, repo, of_type = launches.uow, launches.repo, launches.of_type
MID_NOVEMBER = datetime(2026, 11, 15, tzinfo=UTC)  # 384 h to the month's end
DEADLINE = MID_NOVEMBER + timedelta(days=1)


def at_mid_november() -> datetime:
    return MID_NOVEMBER


def member(
    group: str,
    n: int = 1,
    *,
    cpus: int = 1,
    memory_mb: int = 512,
    price: float | None = None,
    rules: tuple[str, ...] = (),
    lease_end: datetime | None = None,
) -> DeploymentMember:
    return DeploymentMember(
        instance_id=uuid.uuid4(),
        group=group,
        name=f"shop-{group}-{n}",
        image="debian-12",
        cpus=cpus,
        memory_mb=memory_mb,
        price_per_hour=price,
        approval_rules=list(rules),
        lease=Lease(expires_at=lease_end, on_expiry="terminate", warn_seconds=60)
        if lease_end
        else None,
    )


def deployment(*members: DeploymentMember, owner: str = "alice") -> DeploymentRequested:
    return DeploymentRequested(
        deployment_id=uuid.uuid4(),
        owner=owner,
        name="shop",
        template={"groups": [], "on_failure": "rollback"},
        members=list(members),
        approval_deadline=DEADLINE if any(m.approval_rules for m in members) else None,
    )


def scaling(
    of: DeploymentRequested, group: str, count: int, *added: DeploymentMember
) -> DeploymentScaleRequested:
    return DeploymentScaleRequested(
        deployment_id=of.deployment_id,
        owner=of.owner,
        group=group,
        count=count,
        added=list(added),
        requested_by=of.owner,
        approval_deadline=DEADLINE if any(m.approval_rules for m in added) else None,
    )


async def decide(uow: FakeBatchUnitOfWork, repo: FakeDecisionsRepository, *events: Event) -> None:
    await admit_deployments(received(*events), uow, repo=repo, clock=at_mid_november)


async def test_a_deployment_that_fits_reserves_every_member_and_launches_none(
    uow: FakeBatchUnitOfWork, repo: FakeDecisionsRepository
) -> None:
    repo.limits["alice"] = Limits(instances=3, cpus=6)
    db, web1, web2 = member("db", cpus=4, memory_mb=4096), member("web"), member("web", 2)
    asked = deployment(db, web1, web2)

    batch = received(asked)

    await admit_deployments(batch, uow, repo=repo, clock=at_mid_november)

    [admitted] = of_type(uow.events, DeploymentAdmitted)
    assert (admitted.deployment_id, admitted.owner, admitted.name) == (
        asked.deployment_id,
        "alice",
        "shop",
    )
    assert admitted.members == [db, web1, web2] and admitted.held == []
    assert admitted.template == asked.template
    assert repo.ledger[str(db.instance_id)] == Entry(
        db.instance_id,
        "alice",
        Amounts(1, 4, 4096),
        Status.RESERVED,
        deployment_id=asked.deployment_id,
    )
    assert {e.status for e in repo.ledger.values()} == {Status.RESERVED}
    assert repo.usage["alice"] == Amounts(3, 6, 5120)
    [usage] = of_type(uow.events, QuotaUsageChanged)
    assert usage.usage.instances == 3 and usage.usage.cpus == 6
    # The scheduler launches members in their groups' order: quota admits no launch itself.
    assert of_type(uow.events, InstanceLaunchAdmitted) == []
    # All in the deployment request's trace.
    assert {cause.id for _, cause in uow.published} == {batch[0].envelope.id}


async def test_one_member_over_a_limit_refuses_the_whole_deployment(
    uow: FakeBatchUnitOfWork, repo: FakeDecisionsRepository
) -> None:
    repo.limits["alice"] = Limits(cpus=8)
    repo.usage["alice"] = Amounts(1, 2, 512)
    members = [member("db", cpus=2), member("web", cpus=2), member("web", 2, cpus=3)]
    asked = deployment(*members)

    await decide(uow, repo, asked)

    [refused] = uow.events
    assert isinstance(refused, DeploymentRefused)
    assert refused.deployment_id == asked.deployment_id and refused.name == "shop"
    assert refused.reason == (
        "web: cpus limit 8 reached: 2 in use or reserved, this deployment needs 7 more"
    )
    # Every member decided, none reserved: a redelivery finds them, the usage did not move.
    assert [repo.ledger[str(m.instance_id)].status for m in members] == [Status.REJECTED] * 3
    assert repo.usage["alice"] == Amounts(1, 2, 512)


async def test_held_members_are_reserved_awaiting_approval_each_with_its_request(
    uow: FakeBatchUnitOfWork, repo: FakeDecisionsRepository
) -> None:
    db = member("db", cpus=16, price=0.5, rules=("big",))
    web = member("web", price=0.25)
    asked = deployment(db, web)

    await decide(uow, repo, asked)

    [request] = of_type(uow.events, InstanceApprovalRequested)
    assert request.instance_id == db.instance_id and request.owner == "alice"
    assert (request.name, request.cpus, request.price_per_hour) == ("shop-db-1", 16, 0.5)
    assert request.rules == ["big"] and request.deadline == DEADLINE
    [admitted] = of_type(uow.events, DeploymentAdmitted)
    assert admitted.held == [db.instance_id]
    assert repo.ledger[str(db.instance_id)].awaiting
    assert not repo.ledger[str(web.instance_id)].awaiting
    assert repo.kept == {}  # nothing kept to launch on approval: the scheduler launches it
    # 384 h x (0.5 + 0.25)
    [usage] = of_type(uow.events, QuotaUsageChanged)
    assert usage.usage.cost_this_month == 288.0


async def test_a_refused_deployment_asks_no_approval(
    uow: FakeBatchUnitOfWork, repo: FakeDecisionsRepository
) -> None:
    repo.limits["alice"] = Limits(instances=1)

    await decide(uow, repo, deployment(member("db", rules=("big",)), member("web")))

    assert [type(e) for e in uow.events] == [DeploymentRefused]


async def test_the_budget_decides_the_deployment_as_a_whole(
    uow: FakeBatchUnitOfWork, repo: FakeDecisionsRepository
) -> None:
    repo.limits["alice"] = Limits(cost_per_month=Decimal(200))
    # 96 each until the month's end; the db's lease ends in 10 h: 5.
    fits = deployment(
        member("db", price=0.5, lease_end=MID_NOVEMBER + timedelta(hours=10)),
        member("web", price=0.25),
        member("web", 2, price=0.25),
    )
    too_much = deployment(member("web", price=0.25))

    await decide(uow, repo, fits, too_much)

    assert [type(e) for e in uow.events] == [
        DeploymentAdmitted,
        DeploymentRefused,
        QuotaUsageChanged,
    ]
    refused = uow.events[1]
    assert isinstance(refused, DeploymentRefused)
    assert refused.reason == (
        "web: cost_per_month budget 200.00 would be passed: 197.00 spent or committed this "
        "month, this deployment would add 96.00"
    )
    assert uow.events[2] == QuotaUsageChanged.model_validate(
        {
            **uow.events[2].model_dump(),
            "usage": {"instances": 3, "cpus": 3, "memory_mb": 1536, "cost_this_month": 197.0},
        }
    )


async def test_one_owners_deployments_in_a_batch_are_decided_in_order(
    uow: FakeBatchUnitOfWork, repo: FakeDecisionsRepository
) -> None:
    repo.limits["alice"] = Limits(instances=3)
    first = deployment(member("db"), member("web"))
    second = deployment(member("db"), member("web"))  # would fit alone
    bobs = deployment(member("db"), member("web"), owner="bob")

    await decide(uow, repo, first, second, bobs)

    decisions = [e for e in uow.events if not isinstance(e, QuotaUsageChanged)]
    assert [(type(e), e.deployment_id) for e in decisions] == [  # type: ignore[attr-defined]
        (DeploymentAdmitted, first.deployment_id),
        (DeploymentRefused, second.deployment_id),
        (DeploymentAdmitted, bobs.deployment_id),
    ]
    assert repo.usage == {"alice": Amounts(2, 2, 1024), "bob": Amounts(2, 2, 1024)}
    assert {e.owner for e in of_type(uow.events, QuotaUsageChanged)} == {"alice", "bob"}


async def test_a_deployment_delivered_again_is_not_decided_again(
    uow: FakeBatchUnitOfWork, repo: FakeDecisionsRepository
) -> None:
    asked = deployment(member("db"), member("web"))
    await decide(uow, repo, asked, asked)  # twice in one batch
    assert len(of_type(uow.events, DeploymentAdmitted)) == 1

    again = FakeBatchUnitOfWork(conn=uow.conn)
    repo.limits["alice"] = Limits(instances=0)  # it would be refused now
    await decide(again, repo, asked)

    assert again.published == []
    assert repo.usage["alice"] == Amounts(2, 2, 1024) and len(repo.ledger) == 2


async def test_scaling_up_is_admitted_as_a_unit_or_refused_whole(
    uow: FakeBatchUnitOfWork, repo: FakeDecisionsRepository
) -> None:
    repo.limits["alice"] = Limits(instances=4)
    shop = deployment(member("db"), member("web"))
    up = scaling(shop, "web", 3, member("web", 2), member("web", 3, rules=("x",)))
    too_far = scaling(shop, "web", 5, member("web", 4), member("web", 5))

    await decide(uow, repo, shop, up, too_far)

    [admitted] = of_type(uow.events, DeploymentScaleAdmitted)
    assert (admitted.group, admitted.count) == ("web", 3)
    assert admitted.added == up.added and admitted.held == [up.added[1].instance_id]
    [request] = of_type(uow.events, InstanceApprovalRequested)
    assert request.instance_id == up.added[1].instance_id and request.deadline == DEADLINE
    [refused] = of_type(uow.events, DeploymentScaleRefused)
    assert (refused.group, refused.count) == ("web", 5)
    assert refused.added == [m.instance_id for m in too_far.added]
    assert refused.reason == (
        "web: instances limit 4 reached: 4 in use or reserved, scaling web to 5 needs 2 more"
    )
    assert repo.usage["alice"] == Amounts(4, 4, 2048)
    assert repo.ledger[str(up.added[0].instance_id)].deployment_id == shop.deployment_id
    assert {repo.ledger[str(m.instance_id)].status for m in too_far.added} == {Status.REJECTED}


async def test_scaling_down_is_admitted_at_once(
    uow: FakeBatchUnitOfWork, repo: FakeDecisionsRepository
) -> None:
    repo.limits["alice"] = Limits(instances=0)  # above its limit already: nothing is asked
    repo.usage["alice"] = Amounts(3, 3, 1536)
    down = scaling(deployment(), "web", 1)

    await decide(uow, repo, down)

    [admitted] = uow.events
    assert admitted == DeploymentScaleAdmitted(
        deployment_id=down.deployment_id, owner="alice", group="web", count=1
    )
    assert repo.usage["alice"] == Amounts(3, 3, 1536) and repo.ledger == {}


def counted(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_each_refused_member_counts_as_a_rejection_by_the_limit_after_the_commit(
    uow: FakeBatchUnitOfWork, repo: FakeDecisionsRepository
) -> None:
    repo.limits["alice"] = Limits(memory_mb=1000)
    before = (
        counted("boreas_launches_total", outcome="rejected"),
        counted("boreas_quota_rejections_total", limit="memory_mb"),
    )

    await decide(uow, repo, deployment(member("db"), member("web"), member("web", 2)))
    assert counted("boreas_launches_total", outcome="rejected") == before[0]
    uow.commit()

    assert counted("boreas_launches_total", outcome="rejected") == before[0] + 3
    assert counted("boreas_quota_rejections_total", limit="memory_mb") == before[1] + 3
