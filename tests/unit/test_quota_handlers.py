"""decide_launches with a fake unit of work and a fake repository: no database, no bus."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import pytest

from services.quota.accounting import Amounts, Entry, Limits, Status
from services.quota.budget import Spell
from services.quota.handlers import decide_launches
from shared.events import (
    Event,
    InstanceApprovalRequested,
    InstanceLaunchAdmitted,
    InstanceLaunchRequested,
    InstanceRejected,
    Lease,
    QuotaUsageChanged,
    ResourceLimits,
    ResourceUsage,
)
from tests.fakes import FakeBatchUnitOfWork, FakeDecisionsRepository, received

E = TypeVar("E", bound=Event)


def launch(owner: str = "alice", *, cpus: int = 1, memory_mb: int = 512) -> InstanceLaunchRequested:
    return InstanceLaunchRequested(
        instance_id=uuid.uuid4(),
        owner=owner,
        name="vm",
        image="ubuntu",
        cpus=cpus,
        memory_mb=memory_mb,
    )


@pytest.fixture
def uow() -> FakeBatchUnitOfWork:
    return FakeBatchUnitOfWork()


@pytest.fixture
def repo(uow: FakeBatchUnitOfWork) -> FakeDecisionsRepository:
    return FakeDecisionsRepository(uow.conn)


def of_type(events: list[Event], kind: type[E]) -> list[E]:
    return [e for e in events if isinstance(e, kind)]


async def test_a_launch_within_limits_is_admitted_and_reserves_its_room(
    uow: FakeBatchUnitOfWork, repo: FakeDecisionsRepository
) -> None:
    repo.limits["alice"] = Limits(instances=2, cpus=4)
    asked = launch(cpus=2, memory_mb=1024)

    await decide_launches(received(asked), uow, repo=repo)

    assert uow.events[0] == InstanceLaunchAdmitted.of(asked)
    assert repo.ledger[str(asked.instance_id)] == Entry(
        asked.instance_id, "alice", Amounts(1, 2, 1024), Status.RESERVED
    )
    assert repo.usage["alice"] == Amounts(1, 2, 1024)
    [usage] = of_type(uow.events, QuotaUsageChanged)
    assert usage.usage == ResourceUsage(instances=1, cpus=2, memory_mb=1024, cost_this_month=0.0)
    assert usage.limits == ResourceLimits(instances=2, cpus=4)


async def test_a_launch_over_a_limit_is_rejected_naming_the_limit(
    uow: FakeBatchUnitOfWork, repo: FakeDecisionsRepository
) -> None:
    repo.limits["alice"] = Limits(cpus=4)
    repo.usage["alice"] = Amounts(1, 3, 512)
    asked = launch(cpus=2)

    await decide_launches(received(asked), uow, repo=repo)

    [rejected] = uow.events
    assert isinstance(rejected, InstanceRejected)
    assert rejected.instance_id == asked.instance_id and rejected.owner == "alice"
    assert rejected.reason.startswith("cpus limit 4 reached")
    assert repo.ledger[str(asked.instance_id)].status is Status.REJECTED
    assert repo.usage["alice"] == Amounts(1, 3, 512)  # nothing reserved, nothing published


async def test_an_owners_launches_are_decided_in_the_order_they_came(
    uow: FakeBatchUnitOfWork, repo: FakeDecisionsRepository
) -> None:
    repo.limits["alice"] = Limits(instances=2)
    first, second, third = launch(), launch(), launch()

    await decide_launches(received(first, second, third), uow, repo=repo)

    decisions = [e for e in uow.events if not isinstance(e, QuotaUsageChanged)]
    assert [type(e) for e in decisions] == [
        InstanceLaunchAdmitted,
        InstanceLaunchAdmitted,
        InstanceRejected,
    ]
    assert [e.instance_id for e in decisions] == [
        first.instance_id,
        second.instance_id,
        third.instance_id,
    ]


async def test_one_usage_change_per_owner_caused_by_its_last_admission(
    uow: FakeBatchUnitOfWork, repo: FakeDecisionsRepository
) -> None:
    batch = received(launch("alice"), launch("bob"), launch("alice"))

    await decide_launches(batch, uow, repo=repo)

    usages = [(e, cause) for e, cause in uow.published if isinstance(e, QuotaUsageChanged)]
    assert {e.owner: cause for e, cause in usages} == {
        "alice": batch[2].envelope,
        "bob": batch[1].envelope,
    }
    assert repo.usage == {"alice": Amounts(2, 2, 1024), "bob": Amounts(1, 1, 512)}
    # Every decision is caused by the request it decides (its correlation id follows).
    admitted = [(e, c) for e, c in uow.published if isinstance(e, InstanceLaunchAdmitted)]
    assert [c for _, c in admitted] == [r.envelope for r in batch]


async def test_an_already_decided_launch_is_not_decided_again(
    uow: FakeBatchUnitOfWork, repo: FakeDecisionsRepository
) -> None:
    asked = launch()
    await decide_launches(received(asked), uow, repo=repo)
    usage = repo.usage["alice"]

    again = FakeBatchUnitOfWork(conn=uow.conn)
    await decide_launches(received(asked), again, repo=repo)

    assert again.published == []
    assert repo.usage["alice"] == usage
    assert len(repo.ledger) == 1


async def test_a_launch_delivered_twice_in_one_batch_is_decided_once(
    uow: FakeBatchUnitOfWork, repo: FakeDecisionsRepository
) -> None:
    asked = launch()

    await decide_launches(received(asked, asked), uow, repo=repo)

    assert of_type(uow.events, InstanceLaunchAdmitted) == [InstanceLaunchAdmitted.of(asked)]
    assert repo.usage["alice"] == Amounts(1, 1, 512)


async def test_a_batch_of_rejections_only_publishes_no_usage_change(
    uow: FakeBatchUnitOfWork, repo: FakeDecisionsRepository
) -> None:
    repo.limits["alice"] = Limits(instances=0)

    await decide_launches(received(launch(), launch()), uow, repo=repo)

    assert [type(e) for e in uow.events] == [InstanceRejected, InstanceRejected]
    assert repo.usage["alice"] == Amounts()


MID_NOVEMBER = datetime(2026, 11, 15, tzinfo=UTC)  # 384 h to the month's end


def at_mid_november() -> datetime:
    return MID_NOVEMBER


def priced(
    owner: str = "alice", price: float | None = 0.25, **fields: Any
) -> InstanceLaunchRequested:
    return launch(owner).model_copy(update={"price_per_hour": price, **fields})


async def test_a_launch_past_the_budget_is_rejected_naming_the_budget_and_the_figures(
    uow: FakeBatchUnitOfWork, repo: FakeDecisionsRepository
) -> None:
    repo.limits["alice"] = Limits(cost_per_month=Decimal(100))
    repo.ledger["x"] = Entry(
        uuid.uuid4(), "alice", Amounts(1, 1, 512), Status.RESERVED, Decimal("0.01")
    )
    # Spent already this month, by an instance that ended: 10 h at 0.5/h.
    repo.ledger["y"] = Entry(
        uuid.uuid4(), "alice", Amounts(1, 1, 512), Status.RELEASED, Decimal("0.5")
    )
    repo.spells["y"] = (
        Spell(datetime(2026, 11, 2, tzinfo=UTC), datetime(2026, 11, 2, 10, tzinfo=UTC)),
    )

    await decide_launches(received(priced()), uow, repo=repo, clock=at_mid_november)

    [rejected] = uow.events
    assert isinstance(rejected, InstanceRejected)
    # 0.01 x 384 h committed + 5 spent = 8.84; 96 more passes 100.
    assert rejected.reason == (
        "cost_per_month budget 100.00 would be passed: 8.84 spent or committed this month, "
        "this launch would add 96.00 (0.25/h until 2026-12-01 00:00 UTC)"
    )


async def test_an_admission_reports_the_cost_and_the_budget(
    uow: FakeBatchUnitOfWork, repo: FakeDecisionsRepository
) -> None:
    repo.limits["alice"] = Limits(cost_per_month=Decimal("200.5"))
    asked = priced(
        lease=Lease(
            expires_at=MID_NOVEMBER + timedelta(hours=10), on_expiry="stop", warn_seconds=60
        )
    )

    await decide_launches(received(asked), uow, repo=repo, clock=at_mid_november)

    admitted, usage = uow.events
    assert admitted == InstanceLaunchAdmitted.of(asked)
    assert isinstance(usage, QuotaUsageChanged)
    assert usage.usage.cost_this_month == 2.5  # 10 h of lease at 0.25/h
    assert usage.limits.cost_per_month == 200.5
    assert repo.ledger[str(asked.instance_id)].price == Decimal("0.25")
    assert repo.reported["alice"] == (Decimal("2.5000"), MID_NOVEMBER)


async def test_an_unknown_price_is_refused_only_to_an_owner_with_a_budget(
    uow: FakeBatchUnitOfWork, repo: FakeDecisionsRepository
) -> None:
    repo.limits["alice"] = Limits(cost_per_month=Decimal(10))
    alices, bobs = priced("alice", None), priced("bob", None)

    await decide_launches(received(alices, bobs), uow, repo=repo, clock=at_mid_november)

    decisions = {e.owner: e for e in uow.events if not isinstance(e, QuotaUsageChanged)}
    assert isinstance(decisions["alice"], InstanceRejected)
    assert "cannot be checked: the price of this launch is not known" in decisions["alice"].reason
    assert isinstance(decisions["bob"], InstanceLaunchAdmitted)


async def test_a_launch_held_for_an_approval_reserves_its_room_and_asks(
    uow: FakeBatchUnitOfWork, repo: FakeDecisionsRepository
) -> None:
    deadline = MID_NOVEMBER + timedelta(days=1)
    asked = priced(approval_rules=["big"], approval_deadline=deadline, cpus=16)

    await decide_launches(received(asked), uow, repo=repo, clock=at_mid_november)

    held, usage = uow.events
    assert held == InstanceApprovalRequested(
        instance_id=asked.instance_id,
        owner="alice",
        name="vm",
        image="ubuntu",
        cpus=16,
        memory_mb=512,
        price_per_hour=0.25,
        rules=["big"],
        deadline=deadline,
    )
    assert not of_type(uow.events, InstanceLaunchAdmitted)
    entry = repo.ledger[str(asked.instance_id)]
    assert entry.status is Status.RESERVED and entry.awaiting
    assert repo.kept[str(asked.instance_id)] == asked.model_dump(mode="json")
    assert isinstance(usage, QuotaUsageChanged) and usage.usage.cpus == 16


async def test_a_rejected_launch_is_never_held(
    uow: FakeBatchUnitOfWork, repo: FakeDecisionsRepository
) -> None:
    repo.limits["alice"] = Limits(instances=0)
    asked = priced(approval_rules=["big"])

    await decide_launches(received(asked), uow, repo=repo, clock=at_mid_november)

    assert [type(e) for e in uow.events] == [InstanceRejected]
    assert not repo.ledger[str(asked.instance_id)].awaiting and not repo.kept
