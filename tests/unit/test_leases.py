"""Lease arithmetic: the lease a launch gets from a policy, extensions, and an ended lease."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from services.gateway.leases import (
    NO_POLICY,
    LeaseRefused,
    extended_end,
    lease_expired,
    lease_for_launch,
)
from services.gateway.schemas import LeasePolicy
from shared.events import Lease

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
POLICY = LeasePolicy(default_seconds=3600, max_seconds=7200, on_expiry="terminate", warn_seconds=60)


def test_no_policy_no_lease_unless_asked() -> None:
    assert lease_for_launch(NO_POLICY, None, NOW) is None
    assert lease_for_launch(NO_POLICY, 10**6, NOW) == Lease(
        expires_at=NOW + timedelta(seconds=10**6), on_expiry="stop", warn_seconds=300
    )


def test_the_default_or_what_is_asked_up_to_the_maximum() -> None:
    assert lease_for_launch(POLICY, None, NOW) == Lease(
        expires_at=NOW + timedelta(hours=1), on_expiry="terminate", warn_seconds=60
    )
    assert lease_for_launch(POLICY, 7200, NOW).expires_at == NOW + timedelta(hours=2)  # type: ignore[union-attr]
    with pytest.raises(LeaseRefused, match="maximum of 7200 seconds"):
        lease_for_launch(POLICY, 7201, NOW)


def test_an_extension_counts_from_the_end_or_from_now_when_it_has_passed() -> None:
    end = NOW + timedelta(minutes=30)
    assert extended_end(POLICY, end, 1800, NOW) == NOW + timedelta(hours=1)
    passed = NOW - timedelta(hours=5)
    assert extended_end(POLICY, passed, 600, NOW) == NOW + timedelta(minutes=10)


def test_an_extension_may_not_reach_past_now_plus_the_maximum() -> None:
    end = NOW + timedelta(hours=1)
    assert extended_end(POLICY, end, 3600, NOW) == NOW + timedelta(hours=2)
    with pytest.raises(LeaseRefused, match="7200 seconds from now"):
        extended_end(POLICY, end, 3601, NOW)
    assert extended_end(NO_POLICY, end, 10**8, NOW) == end + timedelta(seconds=10**8)


def test_an_ended_lease_stops_a_start() -> None:
    assert lease_expired(None, NOW) is None
    assert lease_expired(NOW + timedelta(seconds=1), NOW) is None
    reason = lease_expired(NOW, NOW)
    assert reason is not None and "extend it first" in reason and NOW.isoformat() in reason


def test_a_default_over_the_maximum_is_no_policy() -> None:
    with pytest.raises(ValidationError, match="default_seconds must not be over max_seconds"):
        LeasePolicy(default_seconds=2, max_seconds=1)
