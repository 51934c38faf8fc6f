"""The quota service: decides every launch, and follows usage from instance events."""

from __future__ import annotations

import uuid

import structlog

from services.quota import repository
from services.quota.accounting import (
    Amounts,
    Limits,
    Status,
    after_end,
    after_placement,
    one_instance,
    refusal,
    usage_delta,
)
from shared.consumer import Subscription, UnitOfWork
from shared.events import (
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


async def decide_launch(event: InstanceLaunchRequested, uow: UnitOfWork) -> None:
    usage = await repository.lock_usage(uow.conn, event.owner)
    if await repository.entry(uow.conn, event.instance_id) is not None:
        return  # decided already
    limits = await repository.limits_of(uow.conn, event.owner)
    amounts = one_instance(event.cpus, event.memory_mb)
    reason = refusal(usage, limits, amounts)
    if reason is not None:
        await repository.record(uow.conn, event.instance_id, event.owner, amounts, Status.REJECTED)
        await uow.publish(
            InstanceRejected(instance_id=event.instance_id, owner=event.owner, reason=reason)
        )
        return
    await repository.record(uow.conn, event.instance_id, event.owner, amounts, Status.RESERVED)
    usage = await repository.add_usage(uow.conn, event.owner, amounts)
    await uow.publish(
        InstanceLaunchAdmitted(**event.model_dump(exclude={"placement"}), placement=event.placement)
    )
    await uow.publish(usage_event(event.owner, usage, limits))


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
        InstanceLaunchRequested, decide_launch, name="decide_launch", order_by=OrderKey.OWNER
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
