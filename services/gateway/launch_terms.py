"""What governs a launch beyond its request, pure: its lease, admission price and the approval
rules that hold it. One rule for a launch of its own and for each member of a deployment."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.gateway.approvals import HeldLaunch, matching_rules
from services.gateway.leases import lease_for_launch
from services.gateway.repository.catalogs import PricedAccount
from services.gateway.schemas import ApprovalRule, LeasePolicy
from shared.events import Lease
from shared.pricing import admission_price


@dataclass(frozen=True)
class LaunchTerms:
    """What governs a launch beyond its request: its lease, price and the rules that hold it."""

    lease: Lease | None
    price_per_hour: float | None
    approval_rules: list[str]
    approval_deadline: datetime | None


def launch_terms(
    policy: LeasePolicy,
    rules: Sequence[ApprovalRule],
    *,
    owner: str,
    cpus: int,
    memory_mb: int,
    lease_seconds: int | None,
    fitting: Sequence[PricedAccount],
    now: datetime,
    approval_timeout: float,
) -> LaunchTerms:
    """The lease (LeaseRefused past the policy's maximum), the admission price over the
    accounts ``fitting`` the launch may go to, and the approval rules it matches, with their
    deadline (``approval_timeout`` seconds from ``now``)."""
    lease = lease_for_launch(policy, lease_seconds, now)
    price = admission_price((a.sizes for a in fitting), cpus, memory_mb)
    held_by = matching_rules(
        rules,
        HeldLaunch(
            owner=owner,
            cpus=cpus,
            memory_mb=memory_mb,
            price_per_hour=price,
            accounts=tuple((a.id, a.name) for a in fitting),
        ),
    )
    deadline = now + timedelta(seconds=approval_timeout) if held_by else None
    return LaunchTerms(lease, price, held_by, deadline)
