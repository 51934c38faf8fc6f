"""The poller's event handlers: which accounts to poll, which instances to follow, and when an
account needs its fast interval."""

from __future__ import annotations

from datetime import timedelta

from services.poller import repository
from shared import tracing
from shared.clouds.connections import CloudConnections
from shared.config import PollerSettings
from shared.consumer import BatchUnitOfWork, Received, Subscription, UnitOfWork
from shared.events import (
    InstanceActionRequested,
    InstanceOwnerChanged,
    InstancePlaced,
    ProviderAccountChanged,
)
from shared.ordering import OrderKey
from shared.runtime import Clock


async def record_account(
    event: ProviderAccountChanged, uow: UnitOfWork, *, clouds: CloudConnections
) -> None:
    """The newest revision of an account; a deleted one is never claimed for a poll again."""
    await repository.upsert_account(uow.conn, event)
    uow.after_commit(lambda: clouds.forget(event.account_id))


async def follow_placements(
    received: list[Received], uow: BatchUnitOfWork, *, settings: PollerSettings, clock: Clock
) -> None:
    placed = [r.event for r in received]
    await repository.follow(uow.conn, placed, [r.envelope.traceparent for r in received])
    await repository.poke(
        uow.conn,
        [e.account_id for e in placed],
        now=clock(),
        default_interval=settings.poll_interval,
    )


async def change_owner(event: InstanceOwnerChanged, uow: UnitOfWork) -> None:
    """An admin gave the instance to another user: its next state changes name the new owner,
    also when this arrives before the placement (see repository.follow)."""
    await repository.change_owner(uow.conn, event.instance_id, event.owner)


async def expect_action(
    event: InstanceActionRequested, uow: UnitOfWork, *, settings: PollerSettings, clock: Clock
) -> None:
    """Poll the instance's account fast until the action shows (or for a while, if it never
    does: a refused action changes nothing)."""
    until = clock() + timedelta(seconds=settings.poll_after_action)
    account_id = await repository.expect_change(
        uow.conn, event.instance_id, until=until, traceparent=tracing.current_traceparent()
    )
    if account_id is not None:
        await repository.poke(
            uow.conn, [account_id], now=clock(), default_interval=settings.poll_interval
        )


# Dependencies by keyword (shared.injection): clouds from bootstrap.py; settings and clock.
SUBSCRIPTIONS = (
    Subscription(ProviderAccountChanged, record_account, order_by=OrderKey.ACCOUNT),
    Subscription(
        InstancePlaced,
        batch_handler=follow_placements,
        name="follow_placement",
        order_by=OrderKey.INSTANCE,
        dedupe=False,  # following twice is following once; a poke twice, a poke
    ),
    # Inbox kept: a copy of an earlier change delivered after a later one is skipped.
    Subscription(InstanceOwnerChanged, change_owner, order_by=OrderKey.INSTANCE),
    Subscription(InstanceActionRequested, expect_action, order_by=OrderKey.INSTANCE),
)
