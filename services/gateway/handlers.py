"""The gateway's event handlers (heartbeats, the instance read model) and their subscriptions."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import asyncpg

from services.gateway.repository import (
    accounts,
    catalogs,
    deployments,
    feed,
    instances,
    quotas,
    webhooks,
)
from services.gateway.repository import status as repository
from shared.consumer import BatchUnitOfWork, Received, Subscription, UnitOfWork
from shared.events import (
    PUBLIC,
    DeploymentScaleRefused,
    DeploymentStateChanged,
    InstanceApprovalRequested,
    InstanceDenied,
    InstanceFailed,
    InstanceLeaseExtended,
    InstancePlaced,
    InstanceRejected,
    InstanceState,
    InstanceStateChanged,
    ProviderAccountCatalogRead,
    ProviderAccountHealth,
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


async def record_rejection(
    event: InstanceRejected, conn: asyncpg.Connection, now: datetime
) -> None:
    await instances.apply_update(
        conn,
        event.instance_id,
        now=now,
        only_from=("requested",),
        state="rejected",
        reason=event.reason,
    )


async def record_placement(event: InstancePlaced, conn: asyncpg.Connection, now: datetime) -> None:
    await instances.record_placement(
        conn,
        event.instance_id,
        now=now,
        account_id=event.account_id,
        provider=event.provider,
        provider_instance_id=event.provider_instance_id,
        region=event.region,
        reason=event.reason,
        price_per_hour=event.price_per_hour,
    )


async def record_failure(event: InstanceFailed, conn: asyncpg.Connection, now: datetime) -> None:
    await instances.apply_update(
        conn,
        event.instance_id,
        now=now,
        # awaiting_approval: a member of a deployment cancelled while held
        only_from=("requested", "awaiting_approval", "pending"),
        state="error",
        reason=event.reason,
    )
    # Terminated before any cloud had it: nothing is left to end.
    await instances.apply_update(
        conn,
        event.instance_id,
        now=now,
        only_from=("terminating",),
        state="terminated",
        reason=event.reason,
    )


async def record_state_change(
    event: InstanceStateChanged, conn: asyncpg.Connection, now: datetime
) -> None:
    # Observations older than the last applied one are ignored (apply_update checks observed_at).
    applied = await instances.apply_update(
        conn,
        event.instance_id,
        now=now,
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
            conn,
            instance_id=event.instance_id,
            owner=event.owner,
            account_id=event.account_id,
            cpus=event.cpus,
            memory_mb=event.memory_mb,
            at=event.observed_at,
        )
    else:
        await quotas.end_run(conn, event.instance_id, event.observed_at)


async def record_usage(event: QuotaUsageChanged, conn: asyncpg.Connection, _now: datetime) -> None:
    await quotas.record_usage(
        conn, event.owner, event.usage.model_dump(), event.limits.model_dump()
    )


async def record_approval_requested(
    received: Received, uow: BatchUnitOfWork, now: datetime
) -> None:
    """The launch waits for an answer; one its owner ended while quota was deciding it (DELETE
    of a requested instance) is denied at once, so that quota releases the room it reserved."""
    event: InstanceApprovalRequested = received.event
    state = await instances.await_approval(uow.conn, event.instance_id, now)
    if state in ("terminating", "terminated"):
        uow.publish(
            InstanceDenied(
                instance_id=event.instance_id,
                owner=event.owner,
                decided_by=event.owner,
                decided_at=now,
                reason=f"withdrawn by {event.owner}",
            ),
            cause=received.envelope,
        )


async def record_lease_extended(
    event: InstanceLeaseExtended, conn: asyncpg.Connection, now: datetime
) -> None:
    await instances.extend_lease(conn, event.instance_id, event.expires_at, now)


async def record_deployment_state(
    event: DeploymentStateChanged, conn: asyncpg.Connection, now: datetime
) -> None:
    """The deployment's state as the orchestrator saw it last; a rejected one's members that
    quota never admitted are rejected with it, and deleted, it keeps the reason it was
    rejected for."""
    applied = await deployments.apply_state_change(
        conn,
        event.deployment_id,
        new_state=event.new_state,
        reason=event.reason,
        failed=event.failed,
        observed_at=event.observed_at,
        now=now,
        keep_reason=event.old_state == "rejected",
    )
    if applied and event.new_state == "rejected":
        await deployments.reject_members(conn, event.deployment_id, event.reason or "rejected", now)


async def record_scale_refused(
    event: DeploymentScaleRefused, uow: UnitOfWork, *, clock: Clock
) -> None:
    """Quota refused a scaling up: the members it would have added are rejected, and the group
    is shown at the count it had, unless it has been scaled again since."""
    now = clock()
    await deployments.reject_members(
        uow.conn, event.deployment_id, event.reason, now, only=event.added
    )
    await deployments.restore_count(
        uow.conn, event.deployment_id, event.group, event.count, event.count - len(event.added), now
    )


# How each public event moves the read model (instance.launch_requested: the route wrote it).
READ_MODEL: dict[type, Callable[[Any, asyncpg.Connection, datetime], Awaitable[None]]] = {
    InstanceRejected: record_rejection,
    InstancePlaced: record_placement,
    InstanceFailed: record_failure,
    InstanceStateChanged: record_state_change,
    QuotaUsageChanged: record_usage,
    InstanceLeaseExtended: record_lease_extended,
    DeploymentStateChanged: record_deployment_state,
    # instance.approval_requested: record_approval_requested (it may publish). instance.approved
    # and instance.denied: the route (or the timeout loop) that published them moved the row in
    # the same transaction.
}


async def record_public(received: list[Received], uow: BatchUnitOfWork, *, clock: Clock) -> None:
    """Every public event: the read model it moves, and its number in the feed of
    ``GET /v1/events``, in one transaction per batch."""
    now = clock()
    for item in received:
        if isinstance(item.event, InstanceApprovalRequested):
            await record_approval_requested(item, uow, now)
        update = READ_MODEL.get(type(item.event))
        if update is not None:
            await update(item.event, uow.conn, now)
    await feed.append(uow.conn, [r.envelope for r in received])


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


async def record_catalog_read(event: ProviderAccountCatalogRead, uow: UnitOfWork) -> None:
    await catalogs.record_read(uow.conn, event)


async def record_account_health(
    event: ProviderAccountHealth, uow: UnitOfWork, *, clock: Clock
) -> None:
    await accounts.record_health(uow.conn, event, reported_at=clock())


# Dependencies by keyword (shared.injection): clock.
SUBSCRIPTIONS = (
    Subscription(
        ServiceHeartbeat,
        record_heartbeat,
        order_by=None,  # "last seen = greatest(...)": any order gives the same result
        dedupe=False,
    ),
    # The read model and the feed in one queue: an instance's events in order, one batch at a
    # time (feed appends take turns anyway, see feed.append), as large as they come.
    Subscription(
        PUBLIC,
        batch_handler=record_public,
        order_by=OrderKey.INSTANCE,
        concurrency=1,
        max_batch=500,
    ),
    # Its own deployment's events in order (a later scaling restores nothing it should not).
    Subscription(DeploymentScaleRefused, record_scale_refused, order_by=OrderKey.INSTANCE),
    # Idempotent by the report's event id (its primary key), and a log: no order needed.
    Subscription(WebhookDeliveryAttempted, record_delivery_attempt, order_by=None, dedupe=False),
    # Applied only if its poll is the newest seen: any order gives the same result.
    Subscription(ProviderAccountHealth, record_account_health, order_by=None, dedupe=False),
    # Applied only if its revision is the newest seen: any order gives the same result.
    Subscription(WebhookDisabled, record_webhook_disabled, order_by=None),
    # The newest read of each account is kept: any order gives the same result.
    Subscription(ProviderAccountCatalogRead, record_catalog_read, order_by=None, dedupe=False),
)
