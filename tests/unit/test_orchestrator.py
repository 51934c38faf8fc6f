"""The orchestrator's pure helpers: what an instance event says of a member, the failure a
member's move records, why a member is cancelled, and the launch a member is given."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from services.scheduler.deployment_rows import DeploymentRow, MemberRow
from services.scheduler.orchestration import DeploymentState, Member, Steps
from services.scheduler.orchestration import MemberState as M
from services.scheduler.orchestrator import _launch, _seen, _why_cancelled, failure_of
from shared.events import (
    DeploymentMember,
    InstanceFailed,
    InstanceState,
    InstanceStateChanged,
    Placement,
)

DEPLOYMENT = uuid.UUID("00000000-0000-4000-8000-0000000000d1")
INSTANCE = uuid.UUID("00000000-0000-4000-8000-000000000001")
NOW = datetime(2026, 11, 26, 12, tzinfo=UTC)


def row(deleting: bool = False) -> DeploymentRow:
    return DeploymentRow(DEPLOYMENT, "alice", "shop", {}, "creating", deleting, None, (), NOW)


def member_row(removed: bool = False) -> MemberRow:
    launch = DeploymentMember(
        instance_id=INSTANCE,
        group="web",
        name="shop-web-0",
        image="debian-12",
        cpus=1,
        memory_mb=1024,
        placement=Placement(provider="simulator"),
        spread="accounts",
        price_per_hour=0.01,
        approval_rules=["big"],
    )
    return MemberRow(Member(INSTANCE, "web", M.WAITING, removed=removed), launch)


def changed(state: InstanceState) -> InstanceStateChanged:
    return InstanceStateChanged(
        instance_id=INSTANCE,
        owner="alice",
        account_id="a",
        provider="simulator",
        provider_instance_id="sim-1",
        old_state=None,
        new_state=state,
        cpus=1,
        memory_mb=1024,
        observed_at=NOW,
    )


def test_what_an_instance_event_says_of_a_member() -> None:
    failed = InstanceFailed(instance_id=INSTANCE, owner="alice", reason="no account fits")
    assert _seen(failed) == ("failed", "no account fits")
    assert _seen(changed(InstanceState.ERROR)) == ("error", "in error on its cloud")
    assert _seen(changed(InstanceState.RUNNING)) == ("running", None)


def test_the_failure_a_members_move_records() -> None:
    assert failure_of(M.LAUNCHING, M.NOT_LAUNCHED, "no account fits") == "no account fits"
    assert failure_of(M.RUNNING, M.FAILED, "in error on its cloud") == "in error on its cloud"
    assert failure_of(M.LAUNCHING, M.RUNNING, None) is None
    # Asked to end: no failure. Ended by someone else: the deployment lost a member.
    assert failure_of(M.TERMINATING, M.TERMINATED, None) is None
    assert failure_of(M.RUNNING, M.TERMINATED, None) == "terminated outside its deployment"


def test_why_a_member_is_cancelled() -> None:
    rollback = Steps(DeploymentState.CREATING, reason="db instance x failed: boom")
    assert _why_cancelled(row(deleting=True), member_row(), rollback) == (
        "the deployment is being deleted"
    )
    assert _why_cancelled(row(), member_row(removed=True), rollback) == (
        "group web was scaled down"
    )
    assert _why_cancelled(row(), member_row(), rollback) == "db instance x failed: boom"
    assert _why_cancelled(row(), member_row(), Steps(DeploymentState.DEGRADED)) == (
        "the deployment failed"
    )


def test_a_member_is_launched_as_admitted_naming_its_deployment_group_and_spread() -> None:
    launch = _launch(row(), member_row())
    assert launch.instance_id == INSTANCE and launch.owner == "alice"
    assert (launch.name, launch.image, launch.cpus, launch.memory_mb) == (
        "shop-web-0",
        "debian-12",
        1,
        1024,
    )
    assert launch.deployment_id == DEPLOYMENT
    assert (launch.group, launch.spread) == ("web", "accounts")
    assert launch.placement == Placement(provider="simulator")
    assert (launch.price_per_hour, launch.approval_rules) == (0.01, ["big"])
