"""Lease decisions, pure: what a lease whose time has come calls for, and the events that say it.

A lease warns ``warn_seconds`` before ``expires_at`` (``instance.lease_expiring``) and, at
``expires_at``, ends (``instance.lease_expired``) with its ``on_expiry`` action asked for like
any other (``instance.action_requested``, requested by ``lease``). A warning missed (the
scheduler was down, or the lease was shorter than its warning) goes out just before the expiry,
in the same transaction, so the two always arrive in that order. A stop is not asked of an
instance already stopped.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from shared.events import (
    Event,
    InstanceAction,
    InstanceActionRequested,
    InstanceLeaseExpired,
    InstanceLeaseExpiring,
    InstanceState,
)

REQUESTED_BY = "lease"


@dataclass(frozen=True)
class DueLease:
    """A lease the loop took, with what the scheduler knows of its instance."""

    instance_id: uuid.UUID
    owner: str
    expires_at: datetime
    on_expiry: Literal["stop", "terminate"]
    warn_seconds: int
    warned: bool
    state: str | None = None  # the instance's last state seen, None: none seen yet
    account_id: str | None = None
    provider_instance_id: str | None = None

    @property
    def warn_at(self) -> datetime:
        return self.expires_at - timedelta(seconds=self.warn_seconds)


@dataclass(frozen=True)
class LeaseStep:
    """What to do with a lease now, and how it is left: ``warned`` for its current expiry, and
    when it is next due (None: nothing more, it has expired)."""

    warn: bool
    expire: bool
    action: InstanceAction | None
    warned: bool
    due_at: datetime | None


def first_due(expires_at: datetime, warn_seconds: int) -> datetime:
    """When a lease (new, or moved by an extension) is first due: at its warning."""
    return expires_at - timedelta(seconds=warn_seconds)


def lease_step(lease: DueLease, now: datetime) -> LeaseStep:
    expire = now >= lease.expires_at
    warn = not lease.warned and (expire or now >= lease.warn_at)
    if expire:
        return LeaseStep(warn, True, expiry_action(lease), True, None)
    warned = lease.warned or warn
    return LeaseStep(warn, False, None, warned, lease.expires_at if warned else lease.warn_at)


def expiry_action(lease: DueLease) -> InstanceAction | None:
    """The action the expiry asks for; none for a stop of an instance already stopped."""
    if lease.on_expiry == "stop" and lease.state == InstanceState.STOPPED.value:
        return None
    return InstanceAction(lease.on_expiry)


def lease_events(lease: DueLease, step: LeaseStep) -> list[Event]:
    """The events ``step`` publishes for ``lease``, in the order they must arrive."""
    events: list[Event] = []
    instance, owner = lease.instance_id, lease.owner
    if step.warn:
        events.append(
            InstanceLeaseExpiring(
                instance_id=instance,
                owner=owner,
                expires_at=lease.expires_at,
                on_expiry=lease.on_expiry,
            )
        )
    if step.expire:
        events.append(
            InstanceLeaseExpired(
                instance_id=instance,
                owner=owner,
                expires_at=lease.expires_at,
                on_expiry=lease.on_expiry,
            )
        )
    if step.action is not None:
        events.append(
            InstanceActionRequested(
                instance_id=lease.instance_id,
                owner=lease.owner,
                action=step.action,
                requested_by=REQUESTED_BY,
                account_id=lease.account_id,
                provider_instance_id=lease.provider_instance_id,
            )
        )
    return events
