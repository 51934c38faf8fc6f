"""Lease decisions, pure: when a lease warns and ends, what its expiry asks for, and the events in
the order they must arrive."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from services.scheduler.leases import DueLease, first_due, lease_events, lease_step
from shared.events import (
    InstanceAction,
    InstanceActionRequested,
    InstanceLeaseExpired,
    InstanceLeaseExpiring,
)

EXPIRES = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
INSTANCE = uuid.UUID("00000000-0000-4000-8000-00000000000a")


def lease(**overrides: object) -> DueLease:
    values: dict = {
        "instance_id": INSTANCE,
        "owner": "alice",
        "expires_at": EXPIRES,
        "on_expiry": "stop",
        "warn_seconds": 300,
        "warned": False,
        "state": "running",
        "account_id": "acct-1",
        "provider_instance_id": "sim-1",
    }
    values.update(overrides)
    return DueLease(**values)


def at(seconds_before_expiry: float) -> datetime:
    return EXPIRES - timedelta(seconds=seconds_before_expiry)


def test_a_new_lease_is_first_due_at_its_warning() -> None:
    assert first_due(EXPIRES, 300) == at(300)
    assert first_due(EXPIRES, 0) == EXPIRES


def test_the_warning_goes_out_at_its_time_and_the_lease_is_next_due_at_expiry() -> None:
    step = lease_step(lease(), at(300))
    assert (step.warn, step.expire, step.action) == (True, False, None)
    assert (step.warned, step.due_at) == (True, EXPIRES)
    assert [type(e) for e in lease_events(lease(), step)] == [InstanceLeaseExpiring]


def test_taken_early_nothing_happens_and_it_stays_due_as_it_was() -> None:
    early = lease_step(lease(), at(400))
    assert (early.warn, early.expire, early.warned, early.due_at) == (False, False, False, at(300))
    warned = lease_step(lease(warned=True), at(10))
    assert (warned.warn, warned.expire, warned.due_at) == (False, False, EXPIRES)
    assert lease_events(lease(), early) == []


@pytest.mark.parametrize("on_expiry", ["stop", "terminate"])
def test_at_expiry_the_lease_ends_with_its_action_asked_for(on_expiry: str) -> None:
    due = lease(on_expiry=on_expiry, warned=True)
    step = lease_step(due, EXPIRES)
    assert (step.warn, step.expire, step.action) == (False, True, InstanceAction(on_expiry))
    assert step.due_at is None
    expired, action = lease_events(due, step)
    assert isinstance(expired, InstanceLeaseExpired) and expired.on_expiry == on_expiry
    assert isinstance(action, InstanceActionRequested)
    assert (action.action, action.requested_by) == (InstanceAction(on_expiry), "lease")
    assert (action.account_id, action.provider_instance_id) == ("acct-1", "sim-1")


def test_a_missed_warning_goes_out_just_before_the_expiry() -> None:
    """The scheduler was down through the warning (or the lease was shorter than it)."""
    due = lease()
    step = lease_step(due, EXPIRES + timedelta(minutes=5))
    assert (step.warn, step.expire) == (True, True)
    topics = [e.TOPIC for e in lease_events(due, step)]
    assert topics == [
        "instance.lease_expiring",
        "instance.lease_expired",
        "instance.action_requested",
    ]


def test_a_stop_is_not_asked_of_an_instance_already_stopped() -> None:
    stopped = lease(state="stopped", warned=True)
    step = lease_step(stopped, EXPIRES)
    assert (step.expire, step.action) == (True, None)
    assert [e.TOPIC for e in lease_events(stopped, step)] == ["instance.lease_expired"]
    # A terminate is carried out whatever the state; an unknown state is stopped anyway.
    assert lease_step(dataclasses.replace(stopped, on_expiry="terminate"), EXPIRES).action == (
        InstanceAction.TERMINATE
    )
    assert lease_step(lease(state=None), EXPIRES).action == InstanceAction.STOP


def test_an_unplaced_instance_is_acted_on_without_a_cloud_id() -> None:
    due = lease(account_id=None, provider_instance_id=None, on_expiry="terminate")
    *_, action = lease_events(due, lease_step(due, EXPIRES))
    assert isinstance(action, InstanceActionRequested)
    assert (action.account_id, action.provider_instance_id) == (None, None)
