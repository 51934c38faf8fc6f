"""The gateway's event handlers (heartbeats, the instance read model) and their subscriptions."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

from services.gateway.repository import feed, instances, quotas, webhooks
from services.gateway.repository import status as repository
from shared.consumer import BatchUnitOfWork, Received, Subscription, UnitOfWork
from shared.events import (
    PUBLIC,
    InstanceFailed,
    InstancePlaced,
    InstanceRejected,
    InstanceState,
    InstanceStateChanged,
    QuotaUsageChanged,
    ServiceHeartbeat,
    WebhookDeliveryAttempted,
    WebhookDisabled,
)
from shared.ordering import OrderKey
from shared.runtime import Clock


async def record_heartbeat(event: ServiceHeartbeat, uow: UnitOfWork, *, clock: Clock) -> None:
    await repository.record_replica_seen(
        uow.conn,
        service=event.service,
        replica=event.replica,
        started_at=event.started_at,
        sent_at=event.sent_at,
        seen_at=clock(),
        failing=event.failing,
    )


async def record_rejection(event: InstanceRejected, uow: UnitOfWork, *, clock: Clock) -> None:
    await instances.apply_update(
        uow.conn,
        event.instance_id,
        now=clock(),
        only_from=("requested",),
        state="rejected",
        reason=event.reason,
    )


async def record_placement(event: InstancePlaced, uow: UnitOfWork, *, clock: Clock) -> None:
    await instances.apply_update(
        uow.conn,
        event.instance_id,
        now=clock(),
        account_id=event.account_id,
        provider=event.provider,
        provider_instance_id=event.provider_instance_id,
        region=event.region,
        reason=event.reason,
    )
    await instances.apply_update(
        uow.conn, event.instance_id, now=clock(), only_from=("requested",), state="pending"
    )


async def record_failure(event: InstanceFailed, uow: UnitOfWork, *, clock: Clock) -> None:
    await instances.apply_update(
        uow.conn,
        event.instance_id,
        now=clock(),
        only_from=("requested", "pending"),
        state="error",
        reason=event.reason,
    )
    # Terminated before any cloud had it: nothing is left to end.
    await instances.apply_update(
        uow.conn,
        event.instance_id,
        now=clock(),
        only_from=("terminating",),
        state="terminated",
        reason=event.reason,
    )


async def record_state_change(
    event: InstanceStateChanged, uow: UnitOfWork, *, clock: Clock
) -> None:
    # Observations older than the last applied one are ignored (apply_update checks observed_at).
    applied = await instances.apply_update(
        uow.conn,
        event.instance_id,
        now=clock(),
        observed_at=event.observed_at,
        state=event.new_state.value,
        account_id=event.account_id,
        provider=event.provider,
        provider_instance_id=event.provider_instance_id,
    )
    if not applied:
        return
    # Running spells, for chargeback: only running time counts.
    if event.new_state is InstanceState.RUNNING:
        await quotas.start_run(
            uow.conn,
            instance_id=event.instance_id,
            owner=event.owner,
            account_id=event.account_id,
            cpus=event.cpus,
            memory_mb=event.memory_mb,
            at=event.observed_at,
        )
    else:
        await quotas.end_run(uow.conn, event.instance_id, event.observed_at)


async def record_in_feed(received: list[Received], uow: BatchUnitOfWork) -> None:
    await feed.append(uow.conn, [r.envelope for r in received])


async def record_usage(event: QuotaUsageChanged, uow: UnitOfWork) -> None:
    await quotas.record_usage(
        uow.conn, event.owner, event.usage.model_dump(), event.limits.model_dump()
    )


async def record_delivery_attempt(event: WebhookDeliveryAttempted, uow: UnitOfWork) -> None:
    await webhooks.record_attempt(uow.conn, uow.envelope.id, event)


async def record_webhook_disabled(event: WebhookDisabled, uow: UnitOfWork) -> None:
    await webhooks.apply_disabled(
        uow.conn,
        event.webhook_id,
        revision=event.revision,
        reason=event.reason,
        at=event.disabled_at,
    )


def subscriptions(*, clock: Clock) -> list[Subscription]:
    def bound(handler: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
        return functools.partial(handler, clock=clock)

    return [
        Subscription(
            ServiceHeartbeat,
            bound(record_heartbeat),
            name="record_heartbeat",
            order_by=None,  # "last seen = greatest(...)": any order gives the same result
            dedupe=False,
        ),
        Subscription(
            InstanceRejected,
            bound(record_rejection),
            name="record_rejection",
            order_by=OrderKey.INSTANCE,
        ),
        Subscription(
            InstancePlaced,
            bound(record_placement),
            name="record_placement",
            order_by=OrderKey.INSTANCE,
        ),
        Subscription(
            InstanceFailed, bound(record_failure), name="record_failure", order_by=OrderKey.INSTANCE
        ),
        Subscription(
            InstanceStateChanged,
            bound(record_state_change),
            name="record_state_change",
            order_by=OrderKey.INSTANCE,
        ),
        # Each carries the owner's whole usage: the last one handled must be the last one sent.
        Subscription(QuotaUsageChanged, record_usage, name="record_usage", order_by=OrderKey.OWNER),
        # Idempotent by the report's event id (its primary key), and a log: no order needed.
        Subscription(
            WebhookDeliveryAttempted,
            record_delivery_attempt,
            name="record_delivery_attempt",
            order_by=None,
            dedupe=False,
        ),
        # Applied only if its revision is the newest seen: any order gives the same result.
        Subscription(
            WebhookDisabled,
            record_webhook_disabled,
            name="record_webhook_disabled",
            order_by=None,
        ),
        # The feed numbers events as they come: an instance's must come in order. Idempotent by
        # event id (unique), so no inbox row per event.
        Subscription(
            PUBLIC,
            batch_handler=record_in_feed,
            name="record_in_feed",
            order_by=OrderKey.INSTANCE,
            dedupe=False,
        ),
    ]
