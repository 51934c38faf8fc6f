"""A launch's terms (lease, admission price, approval rules) as worked out for a launch of its own
and for each member of a deployment alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.gateway.launch_terms import LaunchTerms, launch_terms
from services.gateway.leases import NO_POLICY, LeaseRefused
from services.gateway.repository.catalogs import PricedAccount
from services.gateway.schemas import ApprovalConditions, ApprovalRule, LeasePolicy
from shared.events import CatalogSize

NOW = datetime(2026, 11, 26, 12, tzinfo=UTC)
CHEAP = PricedAccount(
    "a1",
    "sim-a",
    "simulator",
    {},
    [CatalogSize(id="small", cpus=2, memory_mb=2048, price_per_hour=0.1)],
)
DEAR = PricedAccount(
    "a2",
    "sim-b",
    "simulator",
    {},
    [CatalogSize(id="small", cpus=2, memory_mb=2048, price_per_hour=0.5)],
)
BIG = ApprovalRule(name="big", when=ApprovalConditions(cpus_over=1))
ON_B = ApprovalRule(name="on b", when=ApprovalConditions(accounts=["sim-b"]))


def terms(**overrides: Any) -> LaunchTerms:
    values: dict[str, Any] = {
        "owner": "alice",
        "cpus": 2,
        "memory_mb": 1024,
        "lease_seconds": None,
        "fitting": [CHEAP, DEAR],
        "now": NOW,
        "approval_timeout": 3600.0,
    }
    values.update(overrides)
    policy = values.pop("policy", NO_POLICY)
    rules = values.pop("rules", [])
    return launch_terms(policy, rules, **values)


def test_no_policy_no_rules() -> None:
    got = terms()
    assert got.lease is None
    assert got.price_per_hour == 0.5  # the dearest account's cheapest fit
    assert got.approval_rules == []
    assert got.approval_deadline is None


def test_the_lease_comes_from_the_policy() -> None:
    policy = LeasePolicy(default_seconds=600, max_seconds=3600, on_expiry="terminate")
    got = terms(policy=policy)
    assert got.lease is not None
    assert got.lease.expires_at == NOW + timedelta(seconds=600)
    assert got.lease.on_expiry == "terminate"
    longest = terms(policy=policy, lease_seconds=3600).lease
    assert longest is not None
    assert longest.expires_at == NOW + timedelta(hours=1)
    with pytest.raises(LeaseRefused, match="3600 seconds"):
        terms(policy=policy, lease_seconds=3601)


def test_rules_hold_the_launch_with_a_deadline() -> None:
    got = terms(rules=[BIG, ON_B])
    assert got.approval_rules == ["big", "on b"]
    assert got.approval_deadline == NOW + timedelta(hours=1)
    only_a = terms(rules=[ON_B], cpus=1, fitting=[CHEAP])
    assert only_a.approval_rules == []
    assert only_a.price_per_hour == 0.1
