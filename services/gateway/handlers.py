"""The gateway's event handlers and the table that wires them to topics."""

from __future__ import annotations

import functools

from services.gateway import repository
from shared.consumer import Subscription, UnitOfWork
from shared.events import ServiceHeartbeat
from shared.runtime import Clock


async def record_heartbeat(event: ServiceHeartbeat, uow: UnitOfWork, *, clock: Clock) -> None:
    await repository.record_replica_seen(
        uow.conn,
        service=event.service,
        replica=event.replica,
        started_at=event.started_at,
        sent_at=event.sent_at,
        seen_at=clock(),
    )


def subscriptions(*, clock: Clock) -> list[Subscription]:
    return [
        Subscription(
            ServiceHeartbeat,
            functools.partial(record_heartbeat, clock=clock),
            name="record_heartbeat",
            dedupe=False,
        ),
    ]
