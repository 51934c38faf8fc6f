"""The notifier's handlers: every public event to the configured sinks, and the webhooks' state."""

from __future__ import annotations

from services.notifier import repository
from services.notifier.ports import FanOutRepository
from services.notifier.repository import Outgoing
from services.notifier.syslog import SyslogSender, format_rfc5424
from shared.consumer import Subscription, UnitOfWork
from shared.events import PUBLIC, WebhookChanged
from shared.ordering import OrderKey
from shared.runtime import Clock
from shared.webhooks import topics


async def to_syslog(event: object, uow: UnitOfWork, *, sender: SyslogSender, hostname: str) -> None:
    # Raising (collector away) returns the message to the queue: nothing is lost, order is kept.
    await sender.send(format_rfc5424(uow.envelope, hostname))


async def queue_for_webhooks(
    event: object, uow: UnitOfWork, *, clock: Clock, repo: FanOutRepository = repository
) -> None:
    """One delivery per interested webhook: the owner's own, and admins' all-scoped ones."""
    envelope = uow.envelope
    owner = envelope.data.get("owner")
    webhook_ids = [
        webhook_id
        for webhook_id, patterns in await repo.interested(uow.conn, owner)
        if topics.any_matches(patterns, envelope.topic)
    ]
    if webhook_ids:
        await repo.add_deliveries(uow.conn, webhook_ids, Outgoing.of(envelope), now=clock())


async def remember_webhook(event: WebhookChanged, uow: UnitOfWork, *, clock: Clock) -> None:
    kept = await repository.remember_webhook(uow.conn, event)
    if kept and (event.deleted or not event.active):
        await repository.drop_pending(uow.conn, event.webhook_id, clock())


# Dependencies by keyword (shared.injection): clock; sender and hostname for syslog (bootstrap.py).
SUBSCRIPTIONS = (
    # Only the newest revision is kept: any order gives the same result.
    Subscription(WebhookChanged, remember_webhook, order_by=None),
    # Deliveries of one instance go out in the order they are queued here.
    Subscription(PUBLIC, queue_for_webhooks, order_by=OrderKey.INSTANCE),
)

# Subscribed only where BOREAS_SYSLOG_URL names a collector.
SYSLOG = Subscription(
    PUBLIC,
    to_syslog,
    order_by=OrderKey.INSTANCE,
    # One message per transaction: a collector that fails must not resend others.
    max_batch=1,
)
