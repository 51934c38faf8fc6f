"""The fakes of tests/fakes.py implement the interfaces the real code does, parameter for
parameter: a fake that drifted from its repository would let handler tests pass on calls the
database would refuse."""

from __future__ import annotations

import dataclasses
import inspect
from types import ModuleType
from typing import Any

import pytest

from services.notifier import repository as notifier_repository
from services.notifier.ports import FanOutRepository
from services.quota import repository as quota_repository
from services.quota.ports import DecisionsRepository
from services.scheduler import repository as scheduler_repository
from services.scheduler.ports import CallsRepository, Waker
from services.scheduler.worker import CloudWorker
from shared.consumer import BatchUnitOfWork, UnitOfWork
from tests.fakes import (
    FakeBatchUnitOfWork,
    FakeCallsRepository,
    FakeConnection,
    FakeDecisionsRepository,
    FakeFanOutRepository,
    FakeUnitOfWork,
    FakeWorker,
)

REPOSITORIES = [
    (CallsRepository, scheduler_repository, FakeCallsRepository),
    (DecisionsRepository, quota_repository, FakeDecisionsRepository),
    (FanOutRepository, notifier_repository, FakeFanOutRepository),
]


def _shape(function: Any) -> list[tuple[str, Any, Any]]:
    """Names, kinds and defaults of the parameters, ``self`` left out (annotations differ
    only where the fake takes its opaque connection)."""
    return [
        (p.name, p.kind, p.default)
        for p in inspect.signature(function).parameters.values()
        if p.name != "self"
    ]


def _members(protocol: type) -> list[str]:
    return [name for name in vars(protocol) if not name.startswith("_")]


@pytest.mark.parametrize(
    ("protocol", "module", "fake"), REPOSITORIES, ids=lambda x: getattr(x, "__name__", "")
)
def test_the_real_repository_and_its_fake_have_the_protocols_signatures(
    protocol: type, module: ModuleType, fake: type
) -> None:
    assert _members(protocol)
    for name in _members(protocol):
        wanted = _shape(getattr(protocol, name))
        assert _shape(getattr(module, name)) == wanted, f"{module.__name__}.{name}"
        assert _shape(getattr(fake(FakeConnection()), name)) == wanted, f"{fake.__name__}.{name}"
        assert inspect.iscoroutinefunction(getattr(module, name))
        assert inspect.iscoroutinefunction(getattr(fake, name))


def test_the_fake_notifier_repository_keeps_webhooks_as_the_real_one() -> None:
    fake = FakeFanOutRepository(FakeConnection())
    assert _shape(fake.remember_webhook) == _shape(notifier_repository.remember_webhook)


def test_the_fake_worker_wakes_as_the_real_one() -> None:
    assert _shape(FakeWorker.wake) == _shape(Waker.wake) == _shape(CloudWorker.wake)


@pytest.mark.parametrize(
    ("real", "fake"),
    [(UnitOfWork, FakeUnitOfWork), (BatchUnitOfWork, FakeBatchUnitOfWork)],
    ids=["unit_of_work", "batch_unit_of_work"],
)
def test_the_fake_units_of_work_offer_what_the_real_ones_do(real: type, fake: type) -> None:
    assert {f.name for f in dataclasses.fields(real)} <= {f.name for f in dataclasses.fields(fake)}
    for name, member in vars(real).items():
        if callable(member) and not name.startswith("_"):
            assert _shape(getattr(fake, name)) == _shape(member), name
            assert inspect.iscoroutinefunction(getattr(fake, name)) == (
                inspect.iscoroutinefunction(member)
            ), name


def test_the_fakes_are_the_protocols_types() -> None:
    # What mypy checks statically where it reads this file (the real modules are checked where
    # the handlers default to them); at run time, that they are the objects handlers are given.
    conn = FakeConnection()
    calls: CallsRepository = FakeCallsRepository(conn)
    decisions: DecisionsRepository = FakeDecisionsRepository(conn)
    fan_out: FanOutRepository = FakeFanOutRepository(conn)
    worker: Waker = FakeWorker()
    assert all(x is not None for x in (calls, decisions, fan_out, worker))
