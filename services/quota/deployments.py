"""Quota's part in deployments: the members a deployment starts with, or a scaling up adds, are
admitted as one unit (:mod:`services.quota.units`) or refused whole.

A batch of deployment events (ordered by owner, as launches) is decided in one transaction: the
owners' usage rows locked in owner order (the same lock every launch decision takes, so a
deployment and a launch of one owner never both squeeze under a limit, whichever replica
decides them), each unit decided in order against the usage and cost with the units before it.
Every member gets a ledger entry naming its deployment: reserved (flagged awaiting an approval
when approval rules hold it) when its unit is admitted, rejected when it is refused. Then
``deployment.admitted`` (``held``: the members awaiting approval, each with its own
``instance.approval_requested``) or ``deployment.refused``; for a scaling,
``deployment.scale_admitted`` or ``deployment.scale_refused``. A scaling down adds nobody and
is admitted at once.

Quota never admits a member's launch itself: the scheduler's orchestrator launches members in
their groups' order (an approved member only unholds its entry: :mod:`services.quota.following`).
Redelivery-safe: a unit whose members have entries was decided already, and a scaling down is
deduplicated by the inbox.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime
from fractions import Fraction

import structlog

from services.quota import repository
from services.quota.accounting import Amounts, Entry, Limits, Status, ask_of
from services.quota.ports import DecisionsRepository
from services.quota.reporting import costs_at, publish_usages, reported
from services.quota.units import Member, UnitDecision, decide_unit
from shared.consumer import BatchUnitOfWork, Received
from shared.events import (
    DeploymentAdmitted,
    DeploymentMember,
    DeploymentRefused,
    DeploymentRequested,
    DeploymentScaleAdmitted,
    DeploymentScaleRefused,
    DeploymentScaleRequested,
    Envelope,
    Event,
    InstanceApprovalRequested,
)
from shared.metrics import LAUNCHES, QUOTA_REJECTIONS
from shared.runtime import Clock, utcnow

log = structlog.get_logger(__name__)

Asked = DeploymentRequested | DeploymentScaleRequested


def members_of(event: Asked) -> list[DeploymentMember]:
    """The members a deployment event asks room for."""
    return event.members if isinstance(event, DeploymentRequested) else event.added


def _unit_name(event: Asked) -> str:
    if isinstance(event, DeploymentRequested):
        return "this deployment"
    return f"scaling {event.group} to {event.count}"


def approval_request(
    member: DeploymentMember, owner: str, deadline: datetime | None
) -> InstanceApprovalRequested:
    """What a member that approval rules hold asks of an admin."""
    return InstanceApprovalRequested(
        instance_id=member.instance_id,
        owner=owner,
        name=member.name,
        image=member.image,
        cpus=member.cpus,
        memory_mb=member.memory_mb,
        placement=member.placement,
        price_per_hour=member.price_per_hour,
        rules=member.approval_rules,
        deadline=deadline,
    )


def outcome(event: Asked, decision: UnitDecision) -> Event:
    """What quota says of a decided unit."""
    members = members_of(event)
    held = [m.instance_id for m in members if m.approval_rules]
    if isinstance(event, DeploymentRequested):
        if decision.refusal is not None:
            return DeploymentRefused(
                deployment_id=event.deployment_id,
                owner=event.owner,
                name=event.name,
                reason=decision.refusal.reason,
            )
        return DeploymentAdmitted(
            deployment_id=event.deployment_id,
            owner=event.owner,
            name=event.name,
            template=event.template,
            members=members,
            held=held,
        )
    if decision.refusal is not None:
        return DeploymentScaleRefused(
            deployment_id=event.deployment_id,
            owner=event.owner,
            group=event.group,
            count=event.count,
            added=[m.instance_id for m in members],
            reason=decision.refusal.reason,
        )
    return DeploymentScaleAdmitted(
        deployment_id=event.deployment_id,
        owner=event.owner,
        group=event.group,
        count=event.count,
        added=members,
        held=held,
    )


def ledger_entries(event: Asked, decision: UnitDecision) -> list[Entry]:
    """One entry per member: reserved (awaiting, if approval rules hold it) or rejected."""
    status = Status.RESERVED if decision.admitted else Status.REJECTED
    return [
        ask_of(m, event.owner).entry(
            status,
            awaiting=decision.admitted and bool(m.approval_rules),
            deployment_id=event.deployment_id,
        )
        for m in members_of(event)
    ]


async def admit_deployments(
    received: list[Received],
    uow: BatchUnitOfWork,
    *,
    repo: DecisionsRepository = repository,
    clock: Clock = utcnow,
) -> None:
    """Decide a batch of deployment requests and scalings, each as one unit, in one
    transaction (the owners' usage locked in owner order, as launches take it)."""
    owners = sorted({r.event.owner for r in received})
    usage = await repo.lock_usages(uow.conn, owners)
    decided = await repo.decided_among(uow.conn, _asked_ids(received))
    now = clock()
    limits = await repo.limits_for(uow.conn, owners)
    costs = await costs_at(uow.conn, owners, now, repo)
    entries: list[Entry] = []
    last_cause: dict[str, Envelope] = {}
    for item in _undecided(received, decided):
        event: Asked = item.event
        owner = event.owner
        decision = _decide(
            event, usage[owner], limits.get(owner, Limits()), costs.get(owner, Fraction(0)), now
        )
        entries += ledger_entries(event, decision)
        _publish_decision(uow, item, decision)
        if decision.admitted and members_of(event):
            usage[owner], costs[owner] = decision.usage, decision.cost
            last_cause[owner] = item.envelope
    await repo.record_many(uow.conn, entries, {})
    moved = {o: usage[o] for o in owners if o in last_cause}
    await repo.set_usages(uow.conn, moved, reported({o: costs[o] for o in moved}), now)
    publish_usages(uow, moved, limits, costs, last_cause)


def _asked_ids(received: list[Received]) -> list[uuid.UUID]:
    return [m.instance_id for r in received for m in members_of(r.event)]


def _undecided(received: list[Received], decided: set[str]) -> Iterator[Received]:
    """The items whose members have no ledger entries (``decided``: the instance ids that
    have), nor were asked for by an item before them in the batch: a redelivery is skipped."""
    seen = set(decided)
    for item in received:
        ids = {str(m.instance_id) for m in members_of(item.event)}
        if ids & seen:
            log.info("deployment_decided_already", deployment_id=str(item.event.deployment_id))
            continue
        seen |= ids
        yield item


def _decide(
    event: Asked, usage: Amounts, limits: Limits, cost: Fraction, now: datetime
) -> UnitDecision:
    """The event's members admitted as one unit against the owner's usage, limits and cost this
    month, or refused whole."""
    members = [Member(m.group, ask_of(m, event.owner)) for m in members_of(event)]
    return decide_unit(event.owner, members, usage, limits, cost, now, what=_unit_name(event))


def _publish_decision(uow: BatchUnitOfWork, item: Received, decision: UnitDecision) -> None:
    event: Asked = item.event
    members = members_of(event)
    if decision.admitted:
        deadline = event.approval_deadline
        for member in members:
            if member.approval_rules:
                uow.publish(approval_request(member, event.owner, deadline), cause=item.envelope)
    uow.publish(outcome(event, decision), cause=item.envelope)
    if decision.refusal is not None:
        limit, count = decision.refusal.limit, len(members)
        uow.after_commit(lambda: _count_rejections(limit, count))
    log.info(
        "deployment_decided",
        deployment_id=str(event.deployment_id),
        owner=event.owner,
        scaling=isinstance(event, DeploymentScaleRequested),
        members=len(members),
        admitted=decision.admitted,
        held=sum(1 for m in members if m.approval_rules) if decision.admitted else 0,
        reason=decision.refusal.reason if decision.refusal else None,
    )


def _count_rejections(limit: str, members: int) -> None:
    """Each member refused counts as a launch quota refused, by the limit that refused the
    unit."""
    LAUNCHES.labels("rejected").inc(members)
    QUOTA_REJECTIONS.labels(limit).inc(members)
