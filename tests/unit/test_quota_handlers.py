"""decide_launches with a fake unit of work and a fake repository: no database, no bus."""

from __future__ import annotations

import uuid
from typing import TypeVar

import pytest

from services.quota.accounting import Amounts, Entry, Limits, Status
from services.quota.handlers import decide_launches
from shared.events import (
    Event,
    InstanceLaunchAdmitted,
    InstanceLaunchRequested,
    InstanceRejected,
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
