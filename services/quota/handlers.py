"""The quota service: decides every launch, and follows usage from instance events."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from services.quota import repository
from services.quota.accounting import (
    HOLDS,
    Amounts,
    Ask,
    Limits,
    Status,
    after_end,
    after_placement,
    decide,
    limit_of,
    one_instance,
    transfer,
    usage_delta,
)
from services.quota.ports import DecisionsRepository
from shared import tracing
from shared.consumer import BatchUnitOfWork, Received, Subscription, UnitOfWork
from shared.events import (
    Envelope,
    InstanceFailed,
    InstanceLaunchAdmitted,
    InstanceLaunchRequested,
    InstanceOwnerChanged,
    InstancePlaced,
    InstanceRejected,
    InstanceState,
    InstanceStateChanged,
    QuotaLimitsSet,
    QuotaUsageChanged,
    ResourceLimits,
    ResourceUsage,
)
from shared.metrics import LAUNCHES, QUOTA_REJECTIONS
from shared.ordering import OrderKey

log = structlog.get_logger(__name__)


def usage_event(owner: str, usage: Amounts, limits: Limits) -> QuotaUsageChanged:
    return QuotaUsageChanged(
        owner=owner,
        usage=ResourceUsage(instances=usage.instances, cpus=usage.cpus, memory_mb=usage.memory_mb),
        limits=ResourceLimits(
            instances=limits.instances, cpus=limits.cpus, memory_mb=limits.memory_mb
        ),
    )


def _status(refusal: str | None) -> Status:
    return Status.REJECTED if refusal else Status.RESERVED


async def decide_launches(
    received: list[Received], uow: BatchUnitOfWork, *, repo: DecisionsRepository = repository
) -> None:
    """Decide a batch of launches in one transaction: lock the owners' usage, decide each in
    order (pure), write the ledger and usage in bulk, and say what happened. One
    ``quota.usage_changed`` per owner per batch, carrying the usage after it."""
    requests = _first_of_each(received)
    owners = sorted({r.event.owner for r in requests.values()})
    usage = await repo.lock_usages(uow.conn, owners)
    decided = await repo.decided_among(uow.conn, [r.event.instance_id for r in requests.values()])
    fresh = [r for key, r in requests.items() if key not in decided]
    if not fresh:
        return
    limits = await repo.limits_for(uow.conn, owners)
    asks = [
        Ask(str(r.event.instance_id), r.event.owner, one_instance(r.event.cpus, r.event.memory_mb))
        for r in fresh
    ]
    refusals, after = decide(asks, usage, limits)
    await repo.record_many(uow.conn, _ledger_rows(fresh, asks, refusals))
    moved = {o: after[o] for o in owners if after[o] != usage[o]}
    await repo.set_usages(uow.conn, moved)
    last_cause = _publish_decisions(uow, fresh, refusals)
    _publish_usages(uow, moved, limits, last_cause)
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
) -> list[tuple[uuid.UUID, str, Amounts, Status]]:
    return [
        (r.event.instance_id, ask.owner, ask.amounts, _status(reason))
        for r, ask, reason in zip(fresh, asks, refusals, strict=True)
    ]


def _first_of_each(received: list[Received]) -> dict[str, Received]:
    """Each instance's first request in the batch, by instance id: a later one is a
    redelivery."""
    requests: dict[str, Received] = {}
    for item in received:
        requests.setdefault(str(item.event.instance_id), item)
    return requests


def _publish_decisions(
    uow: BatchUnitOfWork, fresh: list[Received], refusals: list[str | None]
) -> dict[str, Envelope]:
    """Admit or reject each launch; returns, by owner, the last admitted launch's envelope (the
    cause of that owner's usage change)."""
    last_cause: dict[str, Envelope] = {}
    for item, reason in zip(fresh, refusals, strict=True):
        event: InstanceLaunchRequested = item.event
        if reason is None:
            decision = uow.publish(
                InstanceLaunchAdmitted.of(event),
                cause=item.envelope,
            )
            last_cause[event.owner] = item.envelope
        else:
            decision = uow.publish(
                InstanceRejected(instance_id=event.instance_id, owner=event.owner, reason=reason),
                cause=item.envelope,
            )
        # In the launch's own trace: the batch's span is only its first launch's.
        log.info(
            "launch_decided",
            instance_id=str(event.instance_id),
            owner=event.owner,
            admitted=reason is None,
            reason=reason,
            **tracing.ids_of(decision.traceparent),
        )
    return last_cause


def _publish_usages(
    uow: BatchUnitOfWork,
    usages: dict[str, Amounts],
    limits: dict[str, Limits],
    last_cause: dict[str, Envelope],
) -> None:
    """One ``quota.usage_changed`` per owner, caused by the last event that moved its usage."""
    for owner, usage_now in usages.items():
        uow.publish(
            usage_event(owner, usage_now, limits.get(owner, Limits())), cause=last_cause[owner]
        )


Transition = Callable[[Status | None], Status | None]


@dataclass
class _Moved:
    """What a batch of transitions came to: each entry's status, each owner's usage delta and
    the last event that moved it."""

    status: dict[str, Status]
    deltas: dict[str, Amounts] = field(default_factory=dict)
    last_cause: dict[str, Envelope] = field(default_factory=dict)


def _apply(
    moves: list[tuple[Received, Transition]],
    entries: dict[str, tuple[str, Status, Amounts]],
) -> _Moved:
    """Each event's transition applied to its ledger entry, in order (pure)."""
    moved = _Moved(status={key: entry[1] for key, entry in entries.items()})
    for item, transition in moves:
        key = str(item.event.instance_id)
        if key not in entries:
            continue  # not a launch this quota decided (e.g. from before quota existed)
        owner, _, amounts = entries[key]
        new = transition(moved.status[key])
        if new is None:
            continue
        delta = usage_delta(moved.status[key], new, amounts)
        moved.status[key] = new
        if delta != Amounts():
            moved.deltas[owner] = moved.deltas.get(owner, Amounts()) + delta
            moved.last_cause[owner] = item.envelope
    return moved


async def _move(uow: BatchUnitOfWork, moves: list[tuple[Received, Transition]]) -> None:
    """Apply each event's transition to its ledger entry, in order, and move the owners' usage
    by the sum: ledger rows locked by instance id, then usage rows by owner, in bulk."""
    entries = await repository.entries(uow.conn, [r.event.instance_id for r, _ in moves])
    moved = _apply(moves, entries)
    changed = {k: s for k, s in moved.status.items() if s != entries[k][1]}
    await repository.set_statuses(uow.conn, changed)
    if not moved.deltas:
        return
    owners = sorted(moved.deltas)
    usage = await repository.lock_usages(uow.conn, owners)
    after = {o: usage[o] + moved.deltas[o] for o in owners}
    await repository.set_usages(uow.conn, after)
    limits = await repository.limits_for(uow.conn, owners)
    _publish_usages(uow, after, limits, moved.last_cause)


async def follow_placements(received: list[Received], uow: BatchUnitOfWork) -> None:
    await _move(uow, [(r, after_placement) for r in received])


async def follow_failures(received: list[Received], uow: BatchUnitOfWork) -> None:
    await _move(uow, [(r, after_end) for r in received])


async def follow_terminations(received: list[Received], uow: BatchUnitOfWork) -> None:
    await _move(uow, [(r, after_end) for r in received])


async def change_owner(event: InstanceOwnerChanged, uow: UnitOfWork) -> None:
    """The instance now counts for its new owner: its ledger entry moves, and the room it holds
    (reserved or active) leaves the owner the ledger had and joins the new one, even above
    the new owner's limits (an admin's decision; their next launches are refused as usual)."""
    entry = (await repository.entries(uow.conn, [event.instance_id])).get(str(event.instance_id))
    if entry is None:
        return  # not a launch this quota decided
    owner, status, amounts = entry
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
    if status not in HOLDS:
        return
    owners = sorted({owner, event.owner})  # locked in owner order, as every batch does
    usage = await repository.lock_usages(uow.conn, owners)
    left, taken = transfer(usage[owner], usage[event.owner], amounts)
    after = {owner: left, event.owner: taken}
    await repository.set_usages(uow.conn, after)
    limits = await repository.limits_for(uow.conn, owners)
    for name in owners:
        await uow.publish(usage_event(name, after[name], limits.get(name, Limits())))


async def apply_limits(event: QuotaLimitsSet, uow: UnitOfWork) -> None:
    limits = Limits(
        instances=event.limits.instances, cpus=event.limits.cpus, memory_mb=event.limits.memory_mb
    )
    usage = await repository.lock_usage(uow.conn, event.owner)
    await repository.set_limits(uow.conn, event.owner, limits)
    await uow.publish(usage_event(event.owner, usage, limits))


# Decisions of one owner in the order they were requested; the rest per instance (each locks
# its owner's usage row, so two of one owner never interleave, whatever their order). The ledger
# makes these idempotent by nature (a decided launch is not decided again, an entry moves only
# forward), so they keep no inbox rows.
# Quota's handlers need nothing but their unit of work (their repository by default).
SUBSCRIPTIONS = (
    Subscription(
        InstanceLaunchRequested,
        batch_handler=decide_launches,
        name="decide_launch",
        order_by=OrderKey.OWNER,
        dedupe=False,
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
    Subscription(
        InstanceStateChanged,
        batch_handler=follow_terminations,
        name="follow_state",
        order_by=OrderKey.INSTANCE,
        when=lambda event: event.new_state is InstanceState.TERMINATED,
        dedupe=False,
    ),
    Subscription(QuotaLimitsSet, apply_limits, order_by=OrderKey.OWNER),
    # With inbox rows, unlike the others: the ledger says who has an instance now, not which
    # changes were applied, and a copy of an earlier change delivered again after a later one
    # would give the instance back.
    Subscription(InstanceOwnerChanged, change_owner, order_by=OrderKey.INSTANCE),
)
