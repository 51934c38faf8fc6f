"""Leases, pure: the lease a launch gets from its owner's policy, and how far one may be extended.

A launch asks for ``lease_seconds`` or gets the policy's default (none: no lease); neither may
pass the policy's maximum. An extension moves the end to ``max(end, now) + seconds``, never
further than ``now + max_seconds``.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from services.gateway.schemas import LeasePolicy
from shared.events import Lease

# A user without a policy row: no lease unless asked, no maximum, stop at expiry, warn 5 min before.
NO_POLICY = LeasePolicy()


class LeaseRefused(ValueError):
    """What was asked is past the policy's maximum; the message says so."""


def lease_for_launch(policy: LeasePolicy, asked: int | None, now: datetime) -> Lease | None:
    """The lease a launch gets (None: none); LeaseRefused when ``asked`` passes the maximum."""
    if asked is not None and policy.max_seconds is not None and asked > policy.max_seconds:
        raise LeaseRefused(
            f"lease_seconds {asked} is over your lease policy's maximum of "
            f"{policy.max_seconds} seconds."
        )
    seconds = asked if asked is not None else policy.default_seconds
    if seconds is None:
        return None
    return Lease(
        expires_at=now + timedelta(seconds=seconds),
        on_expiry=policy.on_expiry,
        warn_seconds=policy.warn_seconds,
    )


def extended_end(
    policy: LeasePolicy, expires_at: datetime, seconds: int, now: datetime
) -> datetime:
    """Where an extension by ``seconds`` moves a lease that ends at ``expires_at``;
    LeaseRefused when that is past ``now`` + the policy's maximum."""
    end = max(expires_at, now) + timedelta(seconds=seconds)
    if policy.max_seconds is not None and end > now + timedelta(seconds=policy.max_seconds):
        limit = now + timedelta(seconds=policy.max_seconds)
        raise LeaseRefused(
            f"The lease would end at {end.isoformat()}, past your lease policy's maximum of "
            f"{policy.max_seconds} seconds from now ({limit.isoformat()})."
        )
    return end


def lease_expired(expires_at: datetime | None, now: datetime) -> str | None:
    """Why an instance may not be started (its lease has ended), or None."""
    if expires_at is None or expires_at > now:
        return None
    return f"The lease expired at {expires_at.isoformat()}; extend it first."
