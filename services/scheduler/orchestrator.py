"""Deployments: the handlers that follow them, and the step each one ends with.

Every handler records what it learnt (a deployment admitted, scaled or to be deleted; a member's
instance running, failed, ended, approved or denied) and then takes :func:`step`: with the
deployment's row locked, :func:`services.scheduler.orchestration.next_steps` says from the
members' states what to do, and the same transaction records it and publishes it (outbox).
Nothing is remembered between events but the tables, so a redelivery or a restart takes the
step again and asks for nothing twice: a member asked to launch is ``launching`` from then on,
one asked to end ``terminating``, one cancelled ``cancelled``.

Launches go to the scheduler itself (``instance.launch_admitted``, placed like any other, with
the member's deployment, group and spread); terminations as ``instance.action_requested``
(requested_by ``deployment``); a member that will never launch is cancelled with
``instance.failed`` (``not launched: …``), which releases its quota.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import asyncpg
import structlog

from services.scheduler import deployment_rows as rows
from services.scheduler import repository
from services.scheduler.deployment_rows import DeploymentRow, MemberRow
from services.scheduler.orchestration import (
    DeploymentState,
    MemberState,
    Steps,
    next_steps,
    observed,
)
from shared.consumer import UnitOfWork
from shared.events import (
    DeploymentAdmitted,
    DeploymentDeleteRequested,
    DeploymentEvent,
    DeploymentOwnerChanged,
    DeploymentRefused,
    DeploymentScaleAdmitted,
    DeploymentStateChanged,
    InstanceAction,
    InstanceActionRequested,
    InstanceApproved,
    InstanceDenied,
    InstanceEvent,
    InstanceFailed,
    InstanceLaunchAdmitted,
    InstanceState,
    InstanceStateChanged,
)
from shared.runtime import Clock
from shared.templates import parse

log = structlog.get_logger(__name__)

REQUESTED_BY = "deployment"


async def follow_deployment(event: DeploymentEvent, uow: UnitOfWork, *, clock: Clock) -> None:
    """deployment.admitted / refused / scale_admitted / delete_requested / owner_changed, in
    order per deployment."""
    conn = uow.conn
    if isinstance(event, DeploymentAdmitted):
        await rows.ensure(conn, event.deployment_id, event.owner, event.name, event.template)
        await rows.add_members(conn, event.deployment_id, event.members, event.held)
        await rows.apply_early_answers(conn, event.deployment_id)
        await _decide(uow, event.deployment_id, Steps(DeploymentState.CREATING), clock)
    elif isinstance(event, DeploymentRefused):
        await rows.ensure(conn, event.deployment_id, event.owner, event.name)
        rejected = Steps(DeploymentState.REJECTED, reason=event.reason)
        await _decide(uow, event.deployment_id, rejected, clock)
    elif isinstance(event, DeploymentScaleAdmitted):
        if await rows.lock(conn, event.deployment_id) is None:
            log.warning("scaling_unknown_deployment", deployment_id=str(event.deployment_id))
            return
        await _scale(conn, event)
    elif isinstance(event, DeploymentDeleteRequested):
        await rows.ensure(conn, event.deployment_id, event.owner)
        await rows.mark_deleting(conn, event.deployment_id)
    elif isinstance(event, DeploymentOwnerChanged):
        await rows.ensure(conn, event.deployment_id, event.owner)
        await rows.set_owner(conn, event.deployment_id, event.owner)
    await step(uow, event.deployment_id, clock)


async def _decide(uow: UnitOfWork, deployment_id: uuid.UUID, decided: Steps, clock: Clock) -> None:
    """Quota's answer moves a deployment on from ``requested``, and from nowhere else."""
    row = await rows.lock(uow.conn, deployment_id)
    if row is not None and row.state == DeploymentState.REQUESTED:
        await _change_state(uow, row, decided, clock)


async def _scale(conn: asyncpg.Connection, event: DeploymentScaleAdmitted) -> None:
    if event.added:
        await rows.add_members(conn, event.deployment_id, event.added, event.held)
        await rows.apply_early_answers(conn, event.deployment_id)
    else:
        await rows.remove_beyond(conn, event.deployment_id, event.group, event.count)


async def follow_member(event: InstanceEvent, uow: UnitOfWork, *, clock: Clock) -> None:
    """A member's instance.state_changed / failed / approved / denied, in order per instance;
    other instances' events change nothing."""
    conn = uow.conn
    deployment_id = await rows.deployment_of(conn, event.instance_id)
    if deployment_id is None:
        if isinstance(event, InstanceApproved | InstanceDenied):
            # Maybe a member whose admission has not been handled yet: kept for it.
            await rows.keep_early_answer(conn, event.instance_id, _denial(event))
        return
    # The deployment first, then its member: the order every step locks them in.
    await rows.lock(conn, deployment_id)
    member = await rows.member(conn, event.instance_id)
    if member is None:
        return
    if isinstance(event, InstanceApproved):
        await rows.unhold(conn, event.instance_id)
    elif isinstance(event, InstanceDenied):
        if member.state is MemberState.WAITING:
            denial = _denial(event)
            await rows.set_member(conn, [event.instance_id], MemberState.DENIED, denial)
    else:
        seen, failure = _seen(event)
        after = observed(member.state, seen)
        if after is not member.state:
            kept = failure_of(member.state, after, failure)
            await rows.set_member(conn, [event.instance_id], after, kept)
    await step(uow, deployment_id, clock)


def _denial(event: InstanceApproved | InstanceDenied) -> str | None:
    if isinstance(event, InstanceApproved):
        return None
    return f"denied by {event.decided_by}: {event.reason}"


def failure_of(before: MemberState, after: MemberState, seen: str | None) -> str | None:
    """The failure a member's move records: what failed it, or an end nobody asked for (its
    owner ended it, or its lease did) — the deployment no longer has all it was made of."""
    if after in (MemberState.FAILED, MemberState.NOT_LAUNCHED):
        return seen
    if after is MemberState.TERMINATED and before is not MemberState.TERMINATING:
        return "terminated outside its deployment"
    return None


def _seen(event: InstanceEvent) -> tuple[str, str | None]:
    """What the event says of the instance, for :func:`observed`, and the failure it names."""
    if isinstance(event, InstanceFailed):
        return "failed", event.reason
    assert isinstance(event, InstanceStateChanged)
    if event.new_state is InstanceState.ERROR:
        return "error", "in error on its cloud"
    return event.new_state.value, None


async def step(uow: UnitOfWork, deployment_id: uuid.UUID, clock: Clock) -> None:
    """The deployment's next steps, taken and recorded in this transaction."""
    row = await rows.lock(uow.conn, deployment_id)
    if row is None:
        return
    if row.deleting and row.state == DeploymentState.REJECTED:
        # Rejected (before or after the deletion was asked): nothing was ever launched.
        await _change_state(uow, row, Steps(DeploymentState.DELETED), clock)
        return
    if row.template is None:
        return  # a deletion known before its admission: nothing to do until admitted
    members = await rows.members(uow.conn, deployment_id)
    steps = next_steps(
        parse(row.template),
        DeploymentState(row.state),
        [m.member for m in members],
        deleting=row.deleting,
    )
    by_id = {m.member.instance_id: m for m in members}
    await _launch_members(uow, row, steps.launch, by_id)
    await _terminate_members(uow, row, steps.terminate)
    await _cancel_members(uow, row, steps, by_id)
    await _change_state(uow, row, steps, clock)
    _log_step(deployment_id, steps)


_ById = dict[uuid.UUID, MemberRow]


async def _launch_members(
    uow: UnitOfWork, row: DeploymentRow, instance_ids: tuple[uuid.UUID, ...], by_id: _ById
) -> None:
    for instance_id in instance_ids:
        await uow.publish(_launch(row, by_id[instance_id]))
    await rows.set_member(uow.conn, instance_ids, MemberState.LAUNCHING)


async def _terminate_members(
    uow: UnitOfWork, row: DeploymentRow, instance_ids: tuple[uuid.UUID, ...]
) -> None:
    for instance_id in instance_ids:
        await uow.publish(
            InstanceActionRequested(
                instance_id=instance_id,
                owner=row.owner,
                action=InstanceAction.TERMINATE,
                requested_by=REQUESTED_BY,
            )
        )
    await rows.set_member(uow.conn, instance_ids, MemberState.TERMINATING)


async def _cancel_members(uow: UnitOfWork, row: DeploymentRow, steps: Steps, by_id: _ById) -> None:
    for instance_id in steps.cancel:
        await rows.cancel_placement(uow.conn, instance_id, row.owner)
        await repository.end_lease(uow.conn, instance_id, row.owner)
        reason = f"not launched: {_why_cancelled(row, by_id[instance_id], steps)}"
        await uow.publish(InstanceFailed(instance_id=instance_id, owner=row.owner, reason=reason))
    await rows.set_member(uow.conn, steps.cancel, MemberState.CANCELLED)


def _log_step(deployment_id: uuid.UUID, steps: Steps) -> None:
    if steps.launch or steps.terminate or steps.cancel:
        log.info(
            "deployment_step",
            deployment_id=str(deployment_id),
            state=steps.state.value,
            launch=len(steps.launch),
            terminate=len(steps.terminate),
            cancel=len(steps.cancel),
        )


def _why_cancelled(row: DeploymentRow, member: MemberRow, steps: Steps) -> str:
    if row.deleting:
        return "the deployment is being deleted"
    if member.member.removed:
        return f"group {member.member.group} was scaled down"
    return steps.reason or "the deployment failed"


def _launch(row: DeploymentRow, member: MemberRow) -> InstanceLaunchAdmitted:
    launch = member.launch
    return InstanceLaunchAdmitted(
        instance_id=launch.instance_id,
        owner=row.owner,
        name=launch.name,
        image=launch.image,
        cpus=launch.cpus,
        memory_mb=launch.memory_mb,
        placement=launch.placement,
        lease=launch.lease,
        price_per_hour=launch.price_per_hour,
        approval_rules=launch.approval_rules,
        deployment_id=row.id,
        group=launch.group,
        spread=launch.spread,
    )


async def _change_state(uow: UnitOfWork, row: DeploymentRow, steps: Steps, clock: Clock) -> None:
    """Record the deployment's state, reason and failed members, and publish what changed (a
    second failure while degraded changes no state, but is news to whoever follows it), with
    ``observed_at`` after the last one's, so the newest wins wherever it is followed."""
    failed = tuple(steps.failed)
    if (steps.state.value, steps.reason, failed) == (row.state, row.reason, row.failed):
        return
    now = max(clock(), row.updated_at + timedelta(microseconds=1))
    await rows.set_state(uow.conn, row.id, steps.state.value, steps.reason, failed, now)
    await uow.publish(
        DeploymentStateChanged(
            deployment_id=row.id,
            owner=row.owner,
            name=row.name,
            old_state=row.state,
            new_state=steps.state.value,
            reason=steps.reason,
            failed=list(failed),
            observed_at=now,
        )
    )
