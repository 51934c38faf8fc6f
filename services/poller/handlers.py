"""The poller's event handlers: which accounts to poll, which instances to follow."""

from __future__ import annotations

import functools

from services.poller import repository
from shared.clouds.connections import CloudConnections
from shared.consumer import Subscription, UnitOfWork
from shared.events import InstancePlaced, ProviderAccountChanged
from shared.ordering import OrderKey


async def record_account(
    event: ProviderAccountChanged, uow: UnitOfWork, *, clouds: CloudConnections
) -> None:
    await repository.upsert_account(uow.conn, event)
    clouds.forget(event.account_id)


async def follow_placement(event: InstancePlaced, uow: UnitOfWork) -> None:
    await repository.follow(uow.conn, event)


def subscriptions(*, clouds: CloudConnections) -> list[Subscription]:
    return [
        Subscription(
            ProviderAccountChanged,
            functools.partial(record_account, clouds=clouds),
            name="record_account",
            order_by=OrderKey.ACCOUNT,
        ),
        Subscription(
            InstancePlaced, follow_placement, name="follow_placement", order_by=OrderKey.INSTANCE
        ),
    ]
