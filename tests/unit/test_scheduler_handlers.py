"""place_launch and carry_out_action with a fake unit of work, repository and worker: no
database, no bus, no cloud. Neither handler calls a cloud: they record the calls owed, and
wake the worker once committed."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from services.scheduler.handlers import carry_out_action, place_launch
from services.scheduler.placement import Request
from services.scheduler.repository import InstancePlacement
from shared.events import (
    InstanceAction,
    InstanceActionRequested,
    InstanceFailed,
    InstanceLaunchAdmitted,
    Lease,
    Placement,
)
from tests.fakes import FakeCallsRepository, FakeConnection, FakeUnitOfWork, FakeWorker

INSTANCE = uuid.UUID("00000000-0000-4000-8000-000000000001")


LEASE = Lease(
    expires_at=datetime(2026, 11, 26, 12, tzinfo=UTC), on_expiry="terminate", warn_seconds=60
)


def admitted(owner: str = "alice", **more: Any) -> InstanceLaunchAdmitted:
    return InstanceLaunchAdmitted(
        instance_id=INSTANCE,
        owner=owner,
        name="vm",
        image="ubuntu",
        cpus=2,
        memory_mb=1024,
        placement=Placement(provider="aws", region="eu-west-1"),
        **more,
    )


def asked(action: InstanceAction, owner: str = "alice") -> InstanceActionRequested:
    return InstanceActionRequested(
        instance_id=INSTANCE, owner=owner, action=action, requested_by=owner
    )


@pytest.fixture
def conn() -> FakeConnection:
    return FakeConnection()


@pytest.fixture
def repo(conn: FakeConnection) -> FakeCallsRepository:
    return FakeCallsRepository(conn)


@pytest.fixture
def worker() -> FakeWorker:
    return FakeWorker()


async def launch(repo: FakeCallsRepository, worker: FakeWorker, **more: Any) -> FakeUnitOfWork:
    event = admitted(**more)
    uow = FakeUnitOfWork.for_event(event, conn=repo.conn)
    await place_launch(event, uow, worker=worker, repo=repo)
    uow.commit()
    return uow


async def act(
    action: InstanceAction, repo: FakeCallsRepository, worker: FakeWorker, owner: str = "alice"
) -> FakeUnitOfWork:
    event = asked(action, owner)
    uow = FakeUnitOfWork.for_event(event, conn=repo.conn)
    await carry_out_action(event, uow, worker=worker, repo=repo)
    return uow


# -- place_launch ------------------------------------------------------------------------------


async def test_a_launch_is_recorded_as_a_call_owed_and_publishes_nothing(
    repo: FakeCallsRepository, worker: FakeWorker
) -> None:
    event = admitted()
    uow = FakeUnitOfWork.for_event(event, conn=repo.conn)

    await place_launch(event, uow, worker=worker, repo=repo)

    [call] = repo.calls
    assert (call["action"], call["owner"], call["status"]) == ("launch", "alice", "pending")
    assert call["request"] == Request(
        owner="alice",
        image="ubuntu",
        cpus=2,
        memory_mb=1024,
        provider="aws",
        account=None,
        region="eu-west-1",
        price_per_hour=None,
    )
    assert repo.locked == [INSTANCE]
    assert repo.leases == {}  # launched without a lease
    # Placement and its outcome are the worker's, once the cloud answers.
    assert uow.published == []
    assert worker.wakes == 0  # not before the call is committed
    uow.commit()
    assert worker.wakes == 1


async def test_a_launch_admitted_again_is_recorded_once(
    repo: FakeCallsRepository, worker: FakeWorker
) -> None:
    await launch(repo, worker)
    await launch(repo, worker)

    assert len(repo.calls_of(INSTANCE, "launch")) == 1


async def test_a_launch_terminated_before_it_was_admitted_is_never_recorded(
    repo: FakeCallsRepository, worker: FakeWorker
) -> None:
    await act(InstanceAction.TERMINATE, repo, worker)

    await launch(repo, worker)

    assert repo.calls_of(INSTANCE, "launch") == []


async def test_a_launch_keeps_its_admitted_price_and_lease(
    repo: FakeCallsRepository, worker: FakeWorker
) -> None:
    await launch(repo, worker, price_per_hour=0.04, lease=LEASE)

    [call] = repo.calls
    assert call["request"].price_per_hour == 0.04  # no dearer size is taken
    assert repo.leases == {INSTANCE: LEASE}


async def test_a_launch_terminated_before_it_was_admitted_gets_no_lease(
    repo: FakeCallsRepository, worker: FakeWorker
) -> None:
    await act(InstanceAction.TERMINATE, repo, worker)

    await launch(repo, worker, lease=LEASE)

    assert repo.leases == {INSTANCE: None}  # ended


# -- carry_out_action --------------------------------------------------------------------------


@pytest.mark.parametrize("action", list(InstanceAction))
async def test_an_action_on_a_placed_instance_is_recorded_for_the_worker(
    action: InstanceAction, repo: FakeCallsRepository, worker: FakeWorker
) -> None:
    await repo.record(repo.conn, InstancePlacement(INSTANCE, "alice", "placed", "acct"))

    uow = await act(action, repo, worker)

    [call] = repo.calls_of(INSTANCE, action.value)
    assert (call["owner"], call["status"]) == ("alice", "pending")
    assert uow.published == []
    assert repo.locked == [INSTANCE]
    uow.commit()
    assert worker.wakes == 1


async def test_an_action_names_the_owner_the_placement_has_now(
    repo: FakeCallsRepository, worker: FakeWorker
) -> None:
    await repo.record(repo.conn, InstancePlacement(INSTANCE, "bob", "placed", "acct"))

    await act(InstanceAction.STOP, repo, worker, owner="alice")  # asked before the change

    [call] = repo.calls_of(INSTANCE, "stop")
    assert call["owner"] == "bob"


async def test_an_action_on_an_instance_being_launched_queues_behind_the_launch(
    repo: FakeCallsRepository, worker: FakeWorker
) -> None:
    await launch(repo, worker)

    await act(InstanceAction.REBOOT, repo, worker)

    assert [c["action"] for c in repo.calls] == ["launch", "reboot"]
    assert repo.calls[0]["status"] == "pending"


async def test_terminating_an_instance_whose_launch_no_cloud_saw_cancels_it(
    repo: FakeCallsRepository, worker: FakeWorker
) -> None:
    await launch(repo, worker)
    wakes = worker.wakes

    uow = await act(InstanceAction.TERMINATE, repo, worker)
    uow.commit()

    assert [(c["action"], c["status"]) for c in repo.calls] == [("launch", "cancelled")]
    assert repo.placements[INSTANCE].status == "cancelled"
    [failed] = uow.published
    assert isinstance(failed, InstanceFailed)
    assert (failed.instance_id, failed.owner) == (INSTANCE, "alice")
    assert failed.reason == "terminated before it was placed"
    assert worker.wakes == wakes  # no call to make


async def test_terminating_an_instance_not_yet_admitted_fails_it_at_once(
    repo: FakeCallsRepository, worker: FakeWorker
) -> None:
    uow = await act(InstanceAction.TERMINATE, repo, worker)

    assert repo.calls == []
    assert repo.placements[INSTANCE].status == "cancelled"
    assert [type(e) for e in uow.published] == [InstanceFailed]


async def test_terminating_an_instance_whose_create_was_sent_queues_behind_the_launch(
    repo: FakeCallsRepository, worker: FakeWorker
) -> None:
    await launch(repo, worker)
    repo.calls[0]["tried"] = ["acct"]  # a cloud was asked: it may hold the instance

    uow = await act(InstanceAction.TERMINATE, repo, worker)

    assert [(c["action"], c["status"]) for c in repo.calls] == [
        ("launch", "pending"),
        ("terminate", "pending"),
    ]
    assert uow.published == []


async def test_terminating_an_instance_a_worker_holds_queues_behind_the_launch(
    repo: FakeCallsRepository, worker: FakeWorker
) -> None:
    await launch(repo, worker)
    repo.calls[0]["leased"] = True

    uow = await act(InstanceAction.TERMINATE, repo, worker)

    assert [c["action"] for c in repo.calls] == ["launch", "terminate"]
    assert uow.published == []


@pytest.mark.parametrize("status", ["failed", "cancelled", "ended"])
@pytest.mark.parametrize("action", list(InstanceAction))
async def test_an_action_on_an_instance_on_no_cloud_does_nothing(
    status: str, action: InstanceAction, repo: FakeCallsRepository, worker: FakeWorker
) -> None:
    await repo.record(repo.conn, InstancePlacement(INSTANCE, "alice", status))

    uow = await act(action, repo, worker)
    uow.commit()

    assert repo.calls == []
    assert uow.published == []
    assert worker.wakes == 0


@pytest.mark.parametrize(
    "action", [InstanceAction.STOP, InstanceAction.START, InstanceAction.REBOOT]
)
async def test_an_action_other_than_terminate_before_the_launch_does_nothing(
    action: InstanceAction, repo: FakeCallsRepository, worker: FakeWorker
) -> None:
    uow = await act(action, repo, worker)

    assert repo.calls == [] and repo.placements == {}
    assert uow.published == []
