"""The quota service: decides every launch, and follows usage from instance events."""

from __future__ import annotations

import uuid

import structlog

from services.quota import repository
from services.quota.accounting import (
    Amounts,
    Ask,
    Limits,
    Status,
    after_end,
    after_placement,
    decide,
    one_instance,
    usage_delta,
)
from shared.consumer import BatchUnitOfWork, Received, Subscription, UnitOfWork
from shared.events import (
    Envelope,
    InstanceFailed,
    InstanceLaunchAdmitted,
    InstanceLaunchRequested,
    InstancePlaced,
    InstanceRejected,
    InstanceState,
    InstanceStateChanged,
    QuotaLimitsSet,
    QuotaUsageChanged,
    ResourceUsage,
)
from shared.ordering import OrderKey

log = structlog.get_logger(__name__)


def usage_event(owner: str, usage: Amounts, limits: Limits) -> QuotaUsageChanged:
    return QuotaUsageChanged(
        owner=owner,
        usage=ResourceUsage(instances=usage.instances, cpus=usage.cpus, memory_mb=usage.memory_mb),
        limits=ResourceUsage(
            instances=limits.instances, cpus=limits.cpus, memory_mb=limits.memory_mb
        ),
    )


def _status(refusal: str | None) -> Status:
    return Status.REJECTED if refusal else Status.RESERVED


async def decide_launches(received: list[Received], uow: BatchUnitOfWork) -> None:
    """Decide a batch of launches in one transaction: lock the owners' usage, decide each in
    order (pure), write the ledger and usage in bulk, and say what happened. One
    ``quota.usage_changed`` per owner per batch, carrying the usage after it."""
    requests: dict[str, Received] = {}
    for item in received:
        requests.setdefault(str(item.event.instance_id), item)  # a redelivery within the batch
    owners = sorted({r.event.owner for r in requests.values()})
    usage = await repository.lock_usages(uow.conn, owners)
    decided = await repository.decided_among(
        uow.conn, [r.event.instance_id for r in requests.values()]
    )
    fresh = [r for key, r in requests.items() if key not in decided]
    if not fresh:
        return
    limits = await repository.limits_for(uow.conn, owners)
    asks = [
        Ask(str(r.event.instance_id), r.event.owner, one_instance(r.event.cpus, r.event.memory_mb))
        for r in fresh
    ]
    refusals, after = decide(asks, usage, limits)
    await repository.record_many(
        uow.conn,
        [
            (r.event.instance_id, ask.owner, ask.amounts, _status(reason))
            for r, ask, reason in zip(fresh, asks, refusals, strict=True)
        ],
    )
    moved = {o: after[o] for o in owners if after[o] != usage[o]}
    await repository.set_usages(uow.conn, moved)
    last_cause: dict[str, Envelope] = {}
    for item, reason in zip(fresh, refusals, strict=True):
        event: InstanceLaunchRequested = item.event
        if reason is None:
            uow.publish(
                InstanceLaunchAdmitted(
                    **event.model_dump(exclude={"placement"}), placement=event.placement
                ),
                cause=item.envelope,
            )
            last_cause[event.owner] = item.envelope
        else:
            uow.publish(
                InstanceRejected(instance_id=event.instance_id, owner=event.owner, reason=reason),
                cause=item.envelope,
            )
    for owner, usage_now in moved.items():
        uow.publish(
            usage_event(owner, usage_now, limits.get(owner, Limits())), cause=last_cause[owner]
        )


async def _move(uow: UnitOfWork, instance_id: uuid.UUID, transition) -> None:
    found = await repository.entry(uow.conn, instance_id)
    if found is None:
        return  # not a launch this quota decided (e.g. from before quota existed)
    owner, status, amounts = found
    new = transition(status)
    if new is None:
        return
    await repository.lock_usage(uow.conn, owner)
    await repository.record(uow.conn, instance_id, owner, amounts, new)
    delta = usage_delta(status, new, amounts)
    if delta != Amounts():
        usage = await repository.add_usage(uow.conn, owner, delta)
        await uow.publish(usage_event(owner, usage, await repository.limits_of(uow.conn, owner)))


async def follow_placement(event: InstancePlaced, uow: UnitOfWork) -> None:
    await _move(uow, event.instance_id, after_placement)


async def follow_failure(event: InstanceFailed, uow: UnitOfWork) -> None:
    await _move(uow, event.instance_id, after_end)


async def follow_state(event: InstanceStateChanged, uow: UnitOfWork) -> None:
    if event.new_state is InstanceState.TERMINATED:
        await _move(uow, event.instance_id, after_end)


async def apply_limits(event: QuotaLimitsSet, uow: UnitOfWork) -> None:
    limits = Limits(
        instances=event.limits.instances, cpus=event.limits.cpus, memory_mb=event.limits.memory_mb
    )
    usage = await repository.lock_usage(uow.conn, event.owner)
    await repository.set_limits(uow.conn, event.owner, limits)
    await uow.publish(usage_event(event.owner, usage, limits))


# Decisions of one owner in the order they were requested; the rest per instance (each locks
# its owner's usage row, so two of one owner never interleave, whatever their order).
SUBSCRIPTIONS = [
    Subscription(
        InstanceLaunchRequested,
        batch_handler=decide_launches,
        name="decide_launch",
        order_by=OrderKey.OWNER,
    ),
    Subscription(
        InstancePlaced, follow_placement, name="follow_placement", order_by=OrderKey.INSTANCE
    ),
    Subscription(InstanceFailed, follow_failure, name="follow_failure", order_by=OrderKey.INSTANCE),
    Subscription(
        InstanceStateChanged, follow_state, name="follow_state", order_by=OrderKey.INSTANCE
    ),
    Subscription(QuotaLimitsSet, apply_limits, name="apply_limits", order_by=OrderKey.OWNER),
]
