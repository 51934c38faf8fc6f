"""The quota service: decides every launch (count limits and the budget; holding those that
approval rules name), admits deployments as one unit (:mod:`services.quota.deployments`), and
follows usage from instance events (:mod:`services.quota.following`)."""

from __future__ import annotations

import uuid
from typing import Any

import structlog

from services.quota import repository
from services.quota.accounting import (
    HOLDS,
    Ask,
    Entry,
    Limits,
    Status,
    ask_of,
    costs_after,
    decide,
    limit_of,
    transfer,
)
from services.quota.budget import money
from services.quota.deployments import admit_deployments
from services.quota.following import (
    admit_approved,
    follow_failures,
    follow_leases,
    follow_placements,
    follow_states,
    release_denied,
)
from services.quota.ports import DecisionsRepository
from services.quota.reporting import costs_at, publish_usages, reported, usage_event
from shared import tracing
from shared.consumer import BatchUnitOfWork, Received, Subscription, UnitOfWork
from shared.events import (
    DeploymentRequested,
    DeploymentScaleRequested,
    Envelope,
    InstanceApprovalRequested,
    InstanceApproved,
    InstanceDenied,
    InstanceFailed,
    InstanceLaunchAdmitted,
    InstanceLaunchRequested,
    InstanceLeaseExtended,
    InstanceOwnerChanged,
    InstancePlaced,
    InstanceRejected,
    InstanceStateChanged,
    QuotaLimitsSet,
)
from shared.metrics import LAUNCHES, QUOTA_REJECTIONS
from shared.ordering import OrderKey
from shared.runtime import Clock, utcnow

log = structlog.get_logger(__name__)


def _status(refusal: str | None) -> Status:
    return Status.REJECTED if refusal else Status.RESERVED


async def decide_launches(
    received: list[Received],
    uow: BatchUnitOfWork,
    *,
    repo: DecisionsRepository = repository,
    clock: Clock = utcnow,
) -> None:
    """Decide a batch of launches in one transaction: lock the owners' usage, decide each in
    order (pure: count limits, then the budget against the owner's cost this month), write the
    ledger and usage in bulk, and say what happened. One ``quota.usage_changed`` per owner per
    batch, carrying the usage and cost after it."""
    requests = _first_of_each(received)
    owners = sorted({r.event.owner for r in requests.values()})
    usage = await repo.lock_usages(uow.conn, owners)
    decided = await repo.decided_among(uow.conn, [r.event.instance_id for r in requests.values()])
    fresh = [r for key, r in requests.items() if key not in decided]
    if not fresh:
        return
    now = clock()
    limits = await repo.limits_for(uow.conn, owners)
    costs = await costs_at(uow.conn, owners, now, repo)
    asks = [ask_of(r.event, r.event.owner) for r in fresh]
    refusals, after = decide(asks, usage, limits, costs=costs, now=now)
    costs = costs_after(asks, refusals, costs, now)
    await repo.record_many(uow.conn, *_ledger_rows(fresh, asks, refusals))
    moved = {o: after[o] for o in owners if after[o] != usage[o]}
    await repo.set_usages(uow.conn, moved, reported(costs), now)
    last_cause = _publish_decisions(uow, fresh, refusals)
    publish_usages(uow, moved, limits, costs, last_cause)
    _count_rejections_at_commit(uow, refusals)


def _count_rejections_at_commit(uow: BatchUnitOfWork, refusals: list[str | None]) -> None:
    rejected = [limit_of(reason) for reason in refusals if reason is not None]
    if rejected:
        uow.after_commit(lambda: _count_rejections(rejected))


def _count_rejections(limits: list[str]) -> None:
    for limit in limits:
        LAUNCHES.labels("rejected").inc()
        QUOTA_REJECTIONS.labels(limit).inc()


def _ledger_rows(
    fresh: list[Received], asks: list[Ask], refusals: list[str | None]
) -> tuple[list[Entry], dict[uuid.UUID, dict[str, Any]]]:
    """The new ledger entries, and the launches kept for an approval."""
    entries: list[Entry] = []
    kept: dict[uuid.UUID, dict[str, Any]] = {}
    for r, ask, reason in zip(fresh, asks, refusals, strict=True):
        event: InstanceLaunchRequested = r.event
        awaiting = reason is None and bool(event.approval_rules)
        if awaiting:
            kept[event.instance_id] = event.model_dump(mode="json")
        entries.append(ask.entry(_status(reason), awaiting=awaiting))
    return entries, kept


def _first_of_each(received: list[Received]) -> dict[str, Received]:
    """Each instance's first request in the batch, by instance id: a later one is a
    redelivery."""
    requests: dict[str, Received] = {}
    for item in received:
        requests.setdefault(str(item.event.instance_id), item)
    return requests


def approval_request(event: InstanceLaunchRequested) -> InstanceApprovalRequested:
    """What a launch that approval rules hold asks of an admin."""
    return InstanceApprovalRequested(
        instance_id=event.instance_id,
        owner=event.owner,
        name=event.name,
        image=event.image,
        cpus=event.cpus,
        memory_mb=event.memory_mb,
        placement=event.placement,
        price_per_hour=event.price_per_hour,
        rules=event.approval_rules,
        deadline=event.approval_deadline,
    )


def _decision(
    event: InstanceLaunchRequested, reason: str | None
) -> InstanceLaunchAdmitted | InstanceApprovalRequested | InstanceRejected:
    if reason is not None:
        return InstanceRejected(instance_id=event.instance_id, owner=event.owner, reason=reason)
    if event.approval_rules:
        return approval_request(event)
    return InstanceLaunchAdmitted.of(event)


def _publish_decisions(
    uow: BatchUnitOfWork, fresh: list[Received], refusals: list[str | None]
) -> dict[str, Envelope]:
    """Admit (or hold for an approval) or reject each launch; returns, by owner, the last
    admitted launch's envelope (the cause of that owner's usage change)."""
    last_cause: dict[str, Envelope] = {}
    for item, reason in zip(fresh, refusals, strict=True):
        event: InstanceLaunchRequested = item.event
        decision = uow.publish(_decision(event, reason), cause=item.envelope)
        if reason is None:
            last_cause[event.owner] = item.envelope
        # In the launch's own trace: the batch's span is only its first launch's.
        log.info(
            "launch_decided",
            instance_id=str(event.instance_id),
            owner=event.owner,
            admitted=reason is None,
            awaiting_approval=reason is None and bool(event.approval_rules),
            reason=reason,
            **tracing.ids_of(decision.traceparent),
        )
    return last_cause


async def change_owner(
    event: InstanceOwnerChanged, uow: UnitOfWork, *, clock: Clock = utcnow
) -> None:
    """The instance now counts for its new owner: its ledger entry moves (its spells with it),
    and the room it holds (reserved or active) leaves the owner the ledger had and joins the
    new one, even above the new owner's limits (an admin's decision; their next launches are
    refused as usual)."""
    entry = (await repository.entries(uow.conn, [event.instance_id])).get(str(event.instance_id))
    if entry is None:
        return  # not a launch this quota decided
    owner = entry.owner
    if owner == event.owner:
        return  # given already
    if owner != event.previous_owner:
        # The ledger is what usage was counted from: the room leaves the owner it names.
        log.warning(
            "owner_change_from_another_owner",
            instance_id=str(event.instance_id),
            ledger_owner=owner,
            previous_owner=event.previous_owner,
        )
    await repository.set_owner(uow.conn, event.instance_id, event.owner)
    if entry.status not in HOLDS:
        return
    owners = sorted({owner, event.owner})  # locked in owner order, as every batch does
    usage = await repository.lock_usages(uow.conn, owners)
    left, taken = transfer(usage[owner], usage[event.owner], entry.amounts)
    after = {owner: left, event.owner: taken}
    now = clock()
    costs = await costs_at(uow.conn, owners, now)
    await repository.set_usages(uow.conn, after, reported(costs), now)
    limits = await repository.limits_for(uow.conn, owners)
    for name in owners:
        await uow.publish(usage_event(name, after[name], limits.get(name, Limits()), costs[name]))


async def apply_limits(event: QuotaLimitsSet, uow: UnitOfWork, *, clock: Clock = utcnow) -> None:
    limits = Limits(
        instances=event.limits.instances,
        cpus=event.limits.cpus,
        memory_mb=event.limits.memory_mb,
        cost_per_month=money(event.limits.cost_per_month),
    )
    usage = await repository.lock_usage(uow.conn, event.owner)
    await repository.set_limits(uow.conn, event.owner, limits)
    now = clock()
    costs = await costs_at(uow.conn, [event.owner], now)
    await repository.set_usages(uow.conn, {event.owner: usage}, reported(costs), now)
    await uow.publish(usage_event(event.owner, usage, limits, costs[event.owner]))


# Decisions of one owner in the order they were requested; the rest per instance (each locks
# its owner's usage row, so two of one owner never interleave, whatever their order). The ledger
# makes these idempotent by nature (a decided launch is not decided again, an entry moves only
# forward, a spell is keyed by its start, a lease only lengthens, an approval or a denial acts
# only on an entry awaiting one), so they keep no inbox rows.
# Quota's handlers need nothing but their unit of work and the clock (their repository by
# default).
SUBSCRIPTIONS = (
    Subscription(
        InstanceLaunchRequested,
        batch_handler=decide_launches,
        name="decide_launch",
        order_by=OrderKey.OWNER,
        dedupe=False,
    ),
    # A deployment's members (or a scaling's added ones) as one unit, under the same lock of the
    # owner's usage as launches. With inbox rows: a scaling down reserves nothing, so only the
    # inbox knows it was answered.
    Subscription(
        (DeploymentRequested, DeploymentScaleRequested),
        batch_handler=admit_deployments,
        name="admit_deployment",
        order_by=OrderKey.OWNER,
    ),
    Subscription(
        InstancePlaced,
        batch_handler=follow_placements,
        name="follow_placement",
        order_by=OrderKey.INSTANCE,
        dedupe=False,
    ),
    Subscription(
        InstanceFailed,
        batch_handler=follow_failures,
        name="follow_failure",
        order_by=OrderKey.INSTANCE,
        dedupe=False,
    ),
    # Every state change: running opens a spell, any other state closes it, termination
    # releases.
    Subscription(
        InstanceStateChanged,
        batch_handler=follow_states,
        name="follow_state",
        order_by=OrderKey.INSTANCE,
        dedupe=False,
    ),
    Subscription(
        InstanceLeaseExtended,
        batch_handler=follow_leases,
        name="follow_lease",
        order_by=OrderKey.INSTANCE,
        dedupe=False,
    ),
    Subscription(
        InstanceApproved,
        batch_handler=admit_approved,
        name="admit_approved",
        order_by=OrderKey.INSTANCE,
        dedupe=False,
    ),
    Subscription(
        InstanceDenied,
        batch_handler=release_denied,
        name="release_denied",
        order_by=OrderKey.INSTANCE,
        dedupe=False,
    ),
    Subscription(QuotaLimitsSet, apply_limits, order_by=OrderKey.OWNER),
    # With inbox rows, unlike the others: the ledger says who has an instance now, not which
    # changes were applied, and a copy of an earlier change delivered again after a later one
    # would give the instance back.
    Subscription(InstanceOwnerChanged, change_owner, order_by=OrderKey.INSTANCE),
)
