"""The consumer runner: one durable quorum queue per (service, handler), bound by the event's topic.

Delivery guarantees, per handler:
- at-least-once from the broker, exactly-once in effect: each message is handled inside one
  database transaction that also records its ``event_id`` in the service's inbox, so a redelivery
  finds the id and is acknowledged without running the handler again. The ack follows the commit.
- in order per queue: messages are handled one at a time per replica (``prefetch`` only pipelines
  the transfer); replicas of a service compete on the same queue.
- bounded retries: a handler that raises is retried with the message redelivered, and after
  ``max_deliveries`` deliveries the message is dead-lettered to ``<queue>.dead-letter``. A message
  that can never be handled (not JSON, not a CloudEvent, unknown type or major version, invalid
  data) is dead-lettered at once. The queue's own ``x-delivery-limit`` backs this up for a message
  that crashes the process itself.
- outages are not failures: while the database is unreachable the message is held and retried with
  backoff without spending its tries, so a PostgreSQL restart dead-letters nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import structlog
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustChannel

from shared.bus import DEAD_LETTER_EXCHANGE, Bus
from shared.db import TRANSIENT_DB_ERRORS
from shared.events import Envelope, Event, UndecodableEvent, decode, parse_envelope
from shared.outbox import add_to_outbox

log = structlog.get_logger(__name__)


@dataclass
class UnitOfWork:
    """What a handler gets besides its event: the open transaction, and a way to emit in it."""

    conn: asyncpg.Connection
    envelope: Envelope
    source: str

    async def publish(self, event: Event) -> Envelope:
        """Emit ``event`` when this handler's transaction commits (transactional outbox)."""
        return await add_to_outbox(
            self.conn,
            event,
            source=self.source,
            correlation_id=self.envelope.correlationid or self.envelope.id,
        )


Handler = Callable[[Any, UnitOfWork], Awaitable[None]]


@dataclass(frozen=True)
class Subscription:
    """``handler`` receives every ``event_type`` event (one class, or several sharing one queue
    and so one order); its queue is ``<service>.<name>``."""

    event_type: type[Event] | tuple[type[Event], ...]
    handler: Handler
    name: str = ""
    # False only for handlers that are idempotent by nature (e.g. "last seen = greatest(...)"),
    # where an inbox row per message would be pure cost.
    dedupe: bool = True
    # True: one replica at a time consumes the queue (RabbitMQ single active consumer), the
    # others standing by, so the queue's order holds across replicas too.
    single_active: bool = False

    @property
    def event_types(self) -> tuple[type[Event], ...]:
        return self.event_type if isinstance(self.event_type, tuple) else (self.event_type,)

    @property
    def handler_name(self) -> str:
        return self.name or getattr(self.handler, "__name__", "handler")


def queue_name(service: str, subscription: Subscription) -> str:
    return f"{service}.{subscription.handler_name}"


def queue_arguments(
    name: str, max_deliveries: int, *, single_active: bool = False
) -> dict[str, Any]:
    return {
        **({"x-single-active-consumer": True} if single_active else {}),
        "x-queue-type": "quorum",
        "x-delivery-limit": max_deliveries,
        "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
        "x-dead-letter-routing-key": name,
        # at-least-once dead-lettering (quorum queues, RabbitMQ ≥ 3.10) requires reject-publish.
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


@dataclass
class _Consumer:
    subscription: Subscription
    queue_name: str
    channel: AbstractRobustChannel
    queue: AbstractQueue
    pending: asyncio.Queue[AbstractIncomingMessage | None] = field(default_factory=asyncio.Queue)
    consumer_tag: str | None = None
    worker: asyncio.Task[None] | None = None


class ConsumerRunner:
    """Attaches a service's subscriptions to the bus and runs them until :meth:`stop`."""

    def __init__(
        self,
        *,
        service: str,
        bus: Bus,
        pool: asyncpg.Pool,
        subscriptions: list[Subscription],
        prefetch: int = 16,
        max_deliveries: int = 5,
        retry_delay: float = 0.2,
    ) -> None:
        names = [queue_name(service, s) for s in subscriptions]
        if len(set(names)) != len(names):
            raise ValueError(f"two handlers share a queue name: {names}")
        self._service = service
        self._bus = bus
        self._pool = pool
        self._subscriptions = subscriptions
        self._prefetch = prefetch
        self._max_deliveries = max_deliveries
        self._retry_delay = retry_delay
        self._consumers: list[_Consumer] = []
        self._stopping = False

    async def start(self) -> None:
        for subscription in self._subscriptions:
            self._consumers.append(await self._attach(subscription))

    async def _attach(self, subscription: Subscription) -> _Consumer:
        name = queue_name(self._service, subscription)
        channel: AbstractRobustChannel = await self._bus.connection.channel()  # type: ignore[assignment]
        await channel.set_qos(prefetch_count=self._prefetch)
        exchange = await channel.declare_exchange(self._bus.exchange_name, "topic", durable=True)
        dead_letters = await channel.declare_exchange(DEAD_LETTER_EXCHANGE, "direct", durable=True)
        dlq = await channel.declare_queue(
            f"{name}.dead-letter", durable=True, arguments={"x-queue-type": "quorum"}
        )
        await dlq.bind(dead_letters, routing_key=name)
        queue = await channel.declare_queue(
            name,
            durable=True,
            arguments=queue_arguments(
                name, self._max_deliveries, single_active=subscription.single_active
            ),
        )
        for event_type in subscription.event_types:
            await queue.bind(exchange, routing_key=event_type.TOPIC)
        consumer = _Consumer(subscription, name, channel, queue)
        consumer.worker = asyncio.create_task(self._work(consumer), name=f"consume-{name}")
        consumer.consumer_tag = await queue.consume(self._enqueue_to(consumer))
        log.info(
            "consumer_attached", queue=name, topics=[t.TOPIC for t in subscription.event_types]
        )
        return consumer

    @staticmethod
    def _enqueue_to(consumer: _Consumer) -> Callable[[AbstractIncomingMessage], Awaitable[None]]:
        # aio-pika runs each delivery in its own task; funnelling them through one queue and one
        # worker keeps handling in delivery order.
        async def enqueue(message: AbstractIncomingMessage) -> None:
            log.debug(
                "message_received",
                queue=consumer.queue_name,
                tag=message.delivery_tag,
                message_id=message.message_id,
                redelivered=message.redelivered,
            )
            consumer.pending.put_nowait(message)

        return enqueue

    async def stop(self, timeout: float = 8.0) -> None:
        """Stop taking messages, let each handler finish the one it holds, close the channels.

        Messages prefetched but not started return to the queue when the channel closes.
        """
        self._stopping = True
        for consumer in self._consumers:
            if consumer.consumer_tag is not None:
                # Bounded: on a connection that is down, aio-pika would wait for it to return.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(consumer.queue.cancel(consumer.consumer_tag), 2)
            consumer.pending.put_nowait(None)
        workers = [c.worker for c in self._consumers if c.worker is not None]
        if workers:
            _, unfinished = await asyncio.wait(workers, timeout=timeout)
            for task in unfinished:
                task.cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)
        for consumer in self._consumers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consumer.channel.close(), 2)

    async def _work(self, consumer: _Consumer) -> None:
        while (message := await consumer.pending.get()) is not None:
            if self._stopping:
                break
            with structlog.contextvars.bound_contextvars(queue=consumer.queue_name):
                await self._deliver(consumer.subscription, consumer.queue_name, message)

    async def _deliver(
        self, subscription: Subscription, consumer: str, message: AbstractIncomingMessage
    ) -> None:
        try:
            envelope = parse_envelope(message.body)
            event = decode(envelope)
            if not isinstance(event, subscription.event_types):
                raise UndecodableEvent(f"{envelope.type} arrived on {consumer}")
        except UndecodableEvent as exc:
            log.error("event_dead_lettered", reason=str(exc), message_id=message.message_id)
            await _settle(message.reject(requeue=False))
            return

        context = {
            "topic": envelope.topic,
            "event_id": envelope.id,
            "correlation_id": envelope.correlationid or envelope.id,
        }
        if envelope.subject:
            context["subject"] = envelope.subject
        with structlog.contextvars.bound_contextvars(**context):
            await self._handle(subscription, consumer, envelope, event, message)

    async def _handle(
        self,
        subscription: Subscription,
        consumer: str,
        envelope: Envelope,
        event: Event,
        message: AbstractIncomingMessage,
    ) -> None:
        outage_backoff = 0.5
        while True:
            try:
                handled = await self._run_in_transaction(subscription, consumer, envelope, event)
            except TRANSIENT_DB_ERRORS as exc:
                if self._stopping:
                    await _settle(message.nack(requeue=True))
                    return
                log.warning("database_unavailable_retrying", error=repr(exc), wait=outage_backoff)
                await asyncio.sleep(outage_backoff)
                outage_backoff = min(outage_backoff * 2, 5.0)
                continue
            except Exception:
                await self._fail(message)
                return
            if not handled:
                log.info("event_duplicate_skipped")
            await _settle(message.ack())
            return

    async def _run_in_transaction(
        self, subscription: Subscription, consumer: str, envelope: Envelope, event: Event
    ) -> bool:
        async with self._pool.acquire() as conn, conn.transaction():
            if subscription.dedupe:
                first_time = await conn.fetchval(
                    """INSERT INTO inbox (consumer, event_id) VALUES ($1, $2)
                       ON CONFLICT DO NOTHING RETURNING true""",
                    consumer,
                    envelope.id,
                )
                if not first_time:
                    return False
            await subscription.handler(event, UnitOfWork(conn, envelope, self._bus.source))
        return True

    async def _fail(self, message: AbstractIncomingMessage) -> None:
        deliveries = int((message.headers or {}).get("x-delivery-count") or 0) + 1
        if deliveries >= self._max_deliveries:
            log.exception("event_dead_lettered", reason="handler failed", deliveries=deliveries)
            await _settle(message.reject(requeue=False))
        else:
            log.exception("handler_failed_will_retry", deliveries=deliveries)
            await asyncio.sleep(self._retry_delay * 2 ** (deliveries - 1))
            await _settle(message.nack(requeue=True))


async def _settle(settlement: Awaitable[None]) -> None:
    """Settle; if the channel died meanwhile, the broker redelivers and the inbox dedupes."""
    try:
        await settlement
    except Exception as exc:
        log.warning("settle_failed_message_will_return", error=repr(exc))
