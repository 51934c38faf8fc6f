"""The consumer runner: each subscription's queues, and handling with only the order that matters.

Topology, per subscription (``<service>.<handler>``):
- ordered (``order_by`` set): a headers exchange ``<service>.<handler>``, bound to the events
  exchange by the subscription's topics, routes each message by its slot header
  (:mod:`shared.ordering`) to one of ``partitions`` quorum queues ``<service>.<handler>.<n>``.
  Each partition has a single active consumer across replicas, so all messages of one key value
  are handled by one replica at a time, in queue order. A message without slot headers (not
  published through :class:`shared.bus.Bus`) goes to partition 0 through the exchange's
  alternate exchange ``<service>.<handler>.unkeyed``, so nothing is dropped.
- unordered (``order_by=None``): one quorum queue ``<service>.<handler>``, replicas competing.

Handling, per replica: messages enter keyed lanes (:class:`shared.lanes.KeyedLanes`) under their
key value (unordered: their event id). ``concurrency`` workers take batches of up to
``max_batch`` messages of keys that are not already being handled; a key's messages therefore
run one after the other while other keys run at the same time.

Delivery guarantees:
- at-least-once from the broker, exactly-once in effect: a batch is handled in one database
  transaction that also records every ``event_id`` in the service's inbox; a redelivery finds its
  id and is acknowledged without running the handler again. Acks follow the commit.
- events a handler publishes (``uow.publish``) are written to the outbox in the same transaction
  and the process's relay is woken after the commit.
- bounded retries: when a batch fails, its messages are retried one by one; a message whose
  handler keeps raising is retried in place (its key waits, so order holds) with a growing delay
  and dead-lettered to ``<service>.<handler>.dead-letter`` after ``max_deliveries`` tries. A
  message that can never be handled (not JSON, not a CloudEvent, unknown type or major version,
  invalid data) is dead-lettered at once. The queue's ``x-delivery-limit`` backs this up for a
  message that crashes the process itself.
- traces (:mod:`shared.tracing`): a message is handled in a span continuing its event's
  ``traceparent``, so the handler's log lines and the events it emits are of that trace. A batch
  runs in the span of its first traced message, linked to the others; each event a batch handler
  emits carries the trace of the message it names as its cause. A message made outside any trace
  (a heartbeat) is handled outside any.
- outages are not failures: while the database is unreachable the batch is held and retried
  with backoff without spending tries, so a PostgreSQL restart dead-letters nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field
from datetime import datetime
from typing import Any

import aio_pika
import asyncpg
import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
)
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind

from shared import tracing
from shared.bus import DEAD_LETTER_EXCHANGE, EXCHANGES, Bus
from shared.db import CONFLICT_ERRORS, TRANSIENT_DB_ERRORS
from shared.events import (
    EXCHANGE,
    Envelope,
    Event,
    UndecodableEvent,
    decode,
    exchange_of,
    parse_envelope,
)
from shared.lanes import KeyedLanes
from shared.loops import Backoff
from shared.metrics import EVENTS_CONSUMED, EVENTS_DEAD_LETTERED, topic_label
from shared.ordering import OrderKey, key_value, partition_binding
from shared.outbox import add_envelopes

log = structlog.get_logger(__name__)
# Waits while the database is away during handling: held, not failed (no tries are spent).
HANDLING_OUTAGE_BACKOFF = Backoff(first=0.5, ceiling=5.0)


@dataclass
class UnitOfWork:
    """What a handler gets besides its event: the open transaction, and a way to emit in it."""

    conn: asyncpg.Connection
    envelope: Envelope
    source: str
    emitted: list[Envelope] = field(default_factory=list)
    committed: list[Callable[[], None]] = field(default_factory=list)

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the transaction has committed (e.g. to wake a worker)."""
        self.committed.append(callback)

    async def publish(self, event: Event) -> Envelope:
        """Emit ``event`` when this handler's transaction commits (transactional outbox)."""
        envelope = Envelope.wrap(
            event,
            source=self.source,
            correlation_id=self.envelope.correlationid or self.envelope.id,
        )
        self.emitted.append(envelope)
        return envelope


@dataclass(frozen=True)
class Received:
    event: Any
    envelope: Envelope


@dataclass
class BatchUnitOfWork:
    """What a batch handler gets: the open transaction, and a way to emit in it."""

    conn: asyncpg.Connection
    source: str
    emitted: list[Envelope] = field(default_factory=list)
    committed: list[Callable[[], None]] = field(default_factory=list)

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the transaction has committed."""
        self.committed.append(callback)

    def publish(self, event: Event, *, cause: Envelope) -> Envelope:
        """Emit ``event`` at commit, in the trace of ``cause`` (the batch's message it came of)."""
        envelope = Envelope.wrap(
            event,
            source=self.source,
            correlation_id=cause.correlationid or cause.id,
            trace=tracing.event_trace(event.TOPIC, _trace_context(cause)),
        )
        self.emitted.append(envelope)
        return envelope


# handler(event, uow, *, dependencies) and batch_handler(received, uow, *, dependencies): the
# keyword-only dependencies are bound at start (shared.injection); the runner passes the first two.
Handler = Callable[..., Awaitable[None]]
BatchHandler = Callable[..., Awaitable[None]]


@dataclass(frozen=True)
class Subscription:
    """``handler`` receives every ``event_type`` event (one class, or several sharing one queue
    and so one order); ``batch_handler``, if given, receives a batch's new events at once."""

    event_type: type[Event] | tuple[type[Event], ...]
    handler: Handler | None = None
    _: KW_ONLY
    # The key whose messages must be handled in order; None: no order needed at all.
    order_by: OrderKey | None
    name: str = ""
    batch_handler: BatchHandler | None = None
    # False only for handlers that are idempotent by nature (e.g. "last seen = greatest(...)"),
    # where an inbox row per message would be pure cost.
    dedupe: bool = True
    # Messages per transaction at most, and batches at once per replica (None: the runner's).
    max_batch: int | None = None
    concurrency: int | None = None
    # Only events for which this is true reach the handler; the others are acknowledged as they
    # arrive, without a transaction (e.g. a handler that cares about one state of many).
    when: Callable[[Any], bool] | None = None

    def __post_init__(self) -> None:
        if (self.handler is None) == (self.batch_handler is None):
            raise ValueError("a subscription has a handler or a batch_handler, not both")

    @property
    def event_types(self) -> tuple[type[Event], ...]:
        return self.event_type if isinstance(self.event_type, tuple) else (self.event_type,)

    @property
    def handler_name(self) -> str:
        target = self.handler or self.batch_handler
        return self.name or getattr(target, "__name__", "handler")


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


@dataclass(frozen=True)
class ConsumerSettings:
    prefetch: int = 64  # per queue and replica
    max_deliveries: int = 5
    retry_delay: float = 0.2
    partitions: int = 4
    concurrency: int = 16  # batches in progress per subscription and replica
    max_batch: int = 32
    # Transactions all of a replica's handlers may have open at once: the share of its pool
    # connections the consumers may take, so the rest (routes, loops) never wait behind them.
    connections: int = 6


@dataclass(eq=False)
class Source:
    """One queue this replica consumes: a partition, or an unordered subscription's queue."""

    queue_name: str
    partition: int | None
    channel: AbstractChannel | None = None
    queue: AbstractQueue | None = None
    consumer_tag: str | None = None
    in_flight: int = 0  # delivered to the lanes, not yet settled
    received: bool = False  # a message arrived since the balancer last looked
    draining: bool = False


@dataclass(eq=False)
class _Delivery:
    message: AbstractIncomingMessage
    source: Source
    envelope: Envelope
    event: Event
    key: str
    tries: int = 0

    @property
    def deliveries(self) -> int:
        # RabbitMQ counts a quorum queue's redeliveries in this header (an integer).
        count = (self.message.headers or {}).get("x-delivery-count")
        return (count if isinstance(count, int) else 0) + 1 + self.tries


@dataclass(eq=False)
class _Consumer:
    subscription: Subscription
    name: str
    lanes: KeyedLanes[_Delivery] = field(default_factory=KeyedLanes)
    sources: list[Source] = field(default_factory=list)
    workers: list[asyncio.Task[None]] = field(default_factory=list)
    busy: int = 0  # batches in progress


class ConsumerRunner:
    """Attaches a service's subscriptions to the bus and runs them until :meth:`stop`."""

    def __init__(
        self,
        *,
        service: str,
        bus: Bus,
        pool: asyncpg.Pool,
        subscriptions: list[Subscription],
        settings: ConsumerSettings | None = None,
        on_commit: Callable[[], None] = lambda: None,
    ) -> None:
        names = [queue_name(service, s) for s in subscriptions]
        if len(set(names)) != len(names):
            raise ValueError(f"two handlers share a queue name: {names}")
        self._service = service
        self._bus = bus
        self._pool = pool
        self._subscriptions = subscriptions
        self._settings = settings or ConsumerSettings()
        self._on_commit = on_commit
        self._consumers: list[_Consumer] = []
        self._stopping = False
        self._settled = asyncio.Event()  # set whenever a batch is done with
        self._connections = asyncio.Semaphore(self._settings.connections)

    @property
    def consumers(self) -> Sequence[_Consumer]:
        return self._consumers

    async def start(self) -> None:
        """Attach every subscription not attached yet: if the broker goes away half way, calling
        this again (once it is back) attaches the rest."""
        attached = {c.name for c in self._consumers}
        for subscription in self._subscriptions:
            consumer = _Consumer(subscription, queue_name(self._service, subscription))
            if consumer.name in attached:
                continue
            try:
                await self._attach(consumer)
            except BaseException:
                for source in consumer.sources:
                    await _close_channel(source)
                raise
            self._consumers.append(consumer)
            concurrency = subscription.concurrency or self._settings.concurrency
            consumer.workers = [
                asyncio.create_task(self._work(consumer), name=f"consume-{consumer.name}-{i}")
                for i in range(concurrency)
            ]

    # -- topology ---------------------------------------------------------------------------

    async def _attach(self, consumer: _Consumer) -> None:
        s, subscription = self._settings, consumer.subscription
        name = consumer.name
        setup = await self._bus.connection.channel()
        try:
            exchanges = {
                e: await setup.declare_exchange(e, "topic", durable=True) for e in EXCHANGES
            }
            await _declare_dead_letter_queue(setup, name)
            topics = [t.TOPIC for t in subscription.event_types]
            bindings = [(exchanges[exchange_of(topic)], topic) for topic in topics]
            if subscription.order_by is None:
                source = Source(name, None)
                consumer.sources.append(source)
                await self._consume(consumer, source, bindings=bindings)
            else:
                await self._retire_unpartitioned_queue(consumer, exchanges[EXCHANGE], topics)
                await self._attach_partitions(consumer, setup, bindings)
        finally:
            with contextlib.suppress(Exception):
                await setup.close()
        await self._remove_stale_bindings(
            name,
            "queue" if subscription.order_by is None else "exchange",
            {(exchange.name, topic) for exchange, topic in bindings},
            # Before it had its own exchange, an internal topic travelled on the public one,
            # in releases that recorded no bindings: let nothing wait for it there.
            earlier=[(EXCHANGE, t) for t in topics if exchange_of(t) != EXCHANGE],
        )
        log.info(
            "consumer_attached",
            queue=name,
            topics=topics,
            order_by=subscription.order_by,
            partitions=s.partitions if subscription.order_by else None,
        )

    async def _attach_partitions(
        self,
        consumer: _Consumer,
        setup: AbstractChannel,
        bindings: Sequence[tuple[AbstractExchange, str]],
    ) -> None:
        """The headers exchange routing each message by its slot to one partition's queue."""
        name = consumer.name
        unkeyed = await setup.declare_exchange(f"{name}.unkeyed", "fanout", durable=True)
        router = await setup.declare_exchange(
            name, "headers", durable=True, arguments={"alternate-exchange": unkeyed.name}
        )
        for exchange, topic in bindings:
            await router.bind(exchange, routing_key=topic)
        for partition in range(self._settings.partitions):
            source = Source(f"{name}.{partition}", partition)
            consumer.sources.append(source)
            await self._consume(
                consumer, source, router=router, fallback=unkeyed if partition == 0 else None
            )

    async def _remove_stale_bindings(
        self,
        handler: str,
        kind: str,
        declared: set[tuple[str, str]],
        earlier: list[tuple[str, str]],
    ) -> None:
        """Unbind what an earlier release of ``handler`` bound and this one no longer declares
        (recorded in ``bus_bindings``, or ``earlier``: (exchange, topic) that releases before
        the record may have bound), then record this release's."""
        rows = [
            *await self._pool.fetch(
                "SELECT exchange, kind, routing_key FROM bus_bindings WHERE handler = $1", handler
            ),
            *({"exchange": e, "kind": kind, "routing_key": t, "earlier": True} for e, t in earlier),
        ]
        for row in rows:
            if row["kind"] == kind and (row["exchange"], row["routing_key"]) in declared:
                continue
            # A channel each: unbinding from something already deleted closes the channel.
            channel = await self._bus.connection.channel()
            try:
                if row["kind"] == "queue":
                    bound: Any = await channel.get_queue(handler, ensure=False)
                else:
                    bound = await channel.get_exchange(handler, ensure=False)
                await bound.unbind(row["exchange"], routing_key=row["routing_key"])
            except aio_pika.exceptions.ChannelNotFoundEntity:
                pass  # the queue or exchange is gone, and its bindings with it
            finally:
                with contextlib.suppress(Exception):
                    await channel.close()
            if row.get("earlier"):
                continue  # never recorded; most starts find nothing there
            await self._pool.execute(
                """DELETE FROM bus_bindings
                   WHERE handler = $1 AND exchange = $2 AND kind = $3 AND routing_key = $4""",
                handler,
                row["exchange"],
                row["kind"],
                row["routing_key"],
            )
            log.info(
                "stale_binding_removed",
                handler=handler,
                exchange=row["exchange"],
                routing_key=row["routing_key"],
            )
        await self._pool.executemany(
            """INSERT INTO bus_bindings (handler, exchange, destination, kind, routing_key)
               VALUES ($1, $2, $1, $3, $4) ON CONFLICT DO NOTHING""",
            [(handler, exchange, kind, topic) for exchange, topic in sorted(declared)],
        )

    async def _consume(
        self,
        consumer: _Consumer,
        source: Source,
        *,
        bindings: Sequence[tuple[AbstractExchange, str]] | None = None,
        router: AbstractExchange | None = None,
        fallback: AbstractExchange | None = None,
    ) -> None:
        """Declare ``source``'s queue, bind it (to its topics, or to a partition of ``router``),
        and start consuming it on a channel of its own."""
        s = self._settings
        channel = await self._bus.connection.channel()
        await channel.set_qos(prefetch_count=s.prefetch)
        queue = await channel.declare_queue(
            source.queue_name,
            durable=True,
            arguments=queue_arguments(
                consumer.name, s.max_deliveries, single_active=source.partition is not None
            ),
        )
        if source.partition is None:
            for exchange, topic in bindings or ():
                await queue.bind(exchange, routing_key=topic)
        else:
            key = consumer.subscription.order_by
            assert key is not None and router is not None
            arguments: dict[str, Any] = partition_binding(key, source.partition, s.partitions)
            await queue.bind(router, arguments=arguments)
            if fallback is not None:
                await queue.bind(fallback)
        source.channel, source.queue = channel, queue
        source.consumer_tag = await queue.consume(self._receiver(consumer, source))

    async def _retire_unpartitioned_queue(
        self, consumer: _Consumer, events: AbstractExchange, topics: list[str]
    ) -> None:
        """Before partitions, an ordered subscription had one queue ``<service>.<handler>``.
        Stop feeding it; drain what it still holds; delete it once it is empty."""
        probe = await self._bus.connection.channel()
        try:
            old = await probe.declare_queue(consumer.name, passive=True)
        except aio_pika.exceptions.ChannelNotFoundEntity:
            return
        finally:
            with contextlib.suppress(Exception):
                await probe.close()
        for topic in topics:
            await old.unbind(events, routing_key=topic)
        waiting = old.declaration_result.message_count
        if not waiting:
            await old.delete(if_unused=False, if_empty=True)
            log.info("unpartitioned_queue_removed", queue=consumer.name)
            return
        log.warning("unpartitioned_queue_draining", queue=consumer.name, messages=waiting)
        source = Source(consumer.name, None)
        channel = await self._bus.connection.channel()
        await channel.set_qos(prefetch_count=self._settings.prefetch)
        source.channel = channel
        source.queue = await channel.get_queue(consumer.name, ensure=False)
        source.consumer_tag = await source.queue.consume(self._receiver(consumer, source))
        consumer.sources.append(source)

    # -- receiving --------------------------------------------------------------------------

    def _receiver(
        self, consumer: _Consumer, source: Source
    ) -> Callable[[AbstractIncomingMessage], Awaitable[None]]:
        subscription = consumer.subscription

        # aio-pika runs each delivery in a task of its own, started in delivery order; this
        # callback does not await before putting the message in its lane, so lanes receive
        # messages in queue order.
        async def receive(message: AbstractIncomingMessage) -> None:
            source.received = True
            try:
                envelope = parse_envelope(message.body)
                event = decode(envelope)
                if not isinstance(event, subscription.event_types):
                    raise UndecodableEvent(f"{envelope.type} arrived on {consumer.name}")
            except UndecodableEvent as exc:
                log.error(
                    "event_dead_lettered",
                    queue=source.queue_name,
                    reason=str(exc),
                    message_id=message.message_id,
                )
                await _settle(message.reject(requeue=False))
                EVENTS_DEAD_LETTERED.labels(
                    self._service, consumer.name, topic_label(message.routing_key), "undecodable"
                ).inc()
                return
            if subscription.when is not None and not subscription.when(event):
                await _settle(message.ack())
                return
            if self._stopping:
                return  # left unacknowledged: the broker takes it back when the channel closes
            key = envelope.id
            if subscription.order_by is not None:
                key = key_value(subscription.order_by, envelope.data, envelope.subject) or key
            source.in_flight += 1
            consumer.lanes.put(key, _Delivery(message, source, envelope, event, key))

        return receive

    # -- handling ---------------------------------------------------------------------------

    async def _work(self, consumer: _Consumer) -> None:
        limit = consumer.subscription.max_batch or self._settings.max_batch
        while True:
            taken = await consumer.lanes.take(limit)
            consumer.busy += 1
            try:
                live = [d for _, d in taken if not _stale(d)]
                for delivery in (d for _, d in taken if _stale(d)):
                    delivery.source.in_flight -= 1  # its channel died: the broker redelivers
                if live:
                    with structlog.contextvars.bound_contextvars(queue=consumer.name):
                        await self._handle(consumer, live)
            finally:
                consumer.busy -= 1
                consumer.lanes.release({key for key, _ in taken})
                self._settled.set()

    async def _settled_until(self, done: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``done()`` holds, checking each time a batch is done with."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not done():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self._settled.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._settled.wait(), remaining)
        return True

    async def _handle(self, consumer: _Consumer, deliveries: list[_Delivery]) -> None:
        # Different keys may go in any order: sorted, batches that lock rows of their keys
        # lock them in the same order, and cannot deadlock each other.
        deliveries.sort(key=lambda d: d.key)
        outages = 0
        while True:
            try:
                emitted, left = await self._run_in_transaction(consumer, deliveries)
            except CONFLICT_ERRORS as exc:
                if len(deliveries) > 1:  # smaller transactions, fewer locks at once
                    return await self._one_by_one(consumer, deliveries)
                log.info("transaction_conflict_retrying", error=repr(exc))
                await asyncio.sleep(random.uniform(0.005, 0.05))
                continue
            except TRANSIENT_DB_ERRORS as exc:
                if self._stopping:
                    return await self._settle_all(deliveries, requeue=True)
                outages += 1
                wait = HANDLING_OUTAGE_BACKOFF.delay(outages)
                log.warning("database_unavailable_retrying", error=repr(exc), wait=wait)
                await asyncio.sleep(wait)
                continue
            except Exception:
                if len(deliveries) > 1:  # find the culprit: each alone, in order
                    return await self._one_by_one(consumer, deliveries)
                if await self._failed(consumer, deliveries[0]):
                    continue
                return
            return await self._committed(consumer, deliveries, emitted=emitted, left=left)

    async def _committed(
        self,
        consumer: _Consumer,
        deliveries: list[_Delivery],
        *,
        emitted: bool,
        left: list[_Delivery],
    ) -> None:
        if emitted:
            self._on_commit()
        for delivery in left:
            delivery.source.in_flight -= 1  # unsettled: back to the queue with the channel
        handled = [d for d in deliveries if d not in left]
        await self._settle_all(handled, requeue=None)
        for delivery in handled:
            EVENTS_CONSUMED.labels(self._service, consumer.name, delivery.envelope.topic).inc()

    async def _one_by_one(self, consumer: _Consumer, deliveries: list[_Delivery]) -> None:
        """Each delivery in its own transaction, in order, so a key's order holds."""
        for delivery in deliveries:
            await self._handle(consumer, [delivery])

    async def _run_in_transaction(
        self, consumer: _Consumer, deliveries: list[_Delivery]
    ) -> tuple[bool, list[_Delivery]]:
        """Handle ``deliveries`` in one transaction; returns whether events were emitted, and
        the deliveries left unhandled because the runner is stopping."""
        subscription = consumer.subscription
        async with self._connections, self._pool.acquire() as conn, conn.transaction():
            fresh = await self._not_seen_before(conn, consumer, deliveries)
            emitted: list[Envelope] = []
            committed: list[Callable[[], None]] = []
            left: list[_Delivery] = []
            if subscription.batch_handler is not None and fresh:
                with _handling([d.envelope for d in fresh]):
                    await subscription.batch_handler(
                        [Received(d.event, d.envelope) for d in fresh],
                        BatchUnitOfWork(conn, self._bus.source, emitted, committed),
                    )
            elif subscription.handler is not None:
                left = await self._each(subscription.handler, conn, fresh, emitted, committed)
                if left and subscription.dedupe:
                    await _forget(conn, consumer.name, left)
            await add_envelopes(conn, emitted)
        for callback in committed:
            callback()
        return bool(emitted), left

    async def _not_seen_before(
        self, conn: asyncpg.Connection, consumer: _Consumer, deliveries: list[_Delivery]
    ) -> list[_Delivery]:
        """The deliveries whose event this consumer has not handled before, each once, now
        recorded in the inbox (in the caller's transaction); all of them without dedupe."""
        if not consumer.subscription.dedupe:
            return deliveries
        inserted = {
            r["event_id"]
            for r in await conn.fetch(
                """INSERT INTO inbox (consumer, event_id) SELECT $1, unnest($2::text[])
                   ON CONFLICT DO NOTHING RETURNING event_id""",
                consumer.name,
                [d.envelope.id for d in deliveries],
            )
        }
        fresh = _first_of_each(d for d in deliveries if d.envelope.id in inserted)
        for _ in range(len(deliveries) - len(fresh)):
            log.info("event_duplicate_skipped")
        return fresh

    async def _each(
        self,
        handler: Handler,
        conn: asyncpg.Connection,
        deliveries: list[_Delivery],
        emitted: list[Envelope],
        committed: list[Callable[[], None]],
    ) -> list[_Delivery]:
        """Run the handler on each delivery in turn; once the runner is stopping, the message
        in hand is finished and the rest are left (returned) for another replica."""
        for done, delivery in enumerate(deliveries):
            if done and self._stopping:
                return deliveries[done:]
            with (
                structlog.contextvars.bound_contextvars(**_context(delivery.envelope)),
                _handling([delivery.envelope]),
            ):
                uow = UnitOfWork(conn, delivery.envelope, self._bus.source, emitted, committed)
                await handler(delivery.event, uow)
        return []

    async def _failed(self, consumer: _Consumer, delivery: _Delivery) -> bool:
        """A handler raised: True to try again now, False when the message was dead-lettered
        or returned to the queue."""
        with structlog.contextvars.bound_contextvars(**_context(delivery.envelope)):
            if delivery.deliveries >= self._settings.max_deliveries:
                log.exception(
                    "event_dead_lettered", reason="handler failed", deliveries=delivery.deliveries
                )
                await self._settle_all([delivery], requeue=False)
                EVENTS_DEAD_LETTERED.labels(
                    self._service, consumer.name, delivery.envelope.topic, "handler_failed"
                ).inc()
                return False
            log.exception("handler_failed_will_retry", deliveries=delivery.deliveries)
            await asyncio.sleep(self._settings.retry_delay * 2 ** (delivery.deliveries - 1))
            delivery.tries += 1
            if self._stopping:
                await self._settle_all([delivery], requeue=True)
                return False
            return True

    async def _settle_all(self, deliveries: list[_Delivery], *, requeue: bool | None) -> None:
        """Ack (``requeue`` None), return to the queue (True) or dead-letter (False)."""
        for delivery in deliveries:
            delivery.source.in_flight -= 1
            message = delivery.message
            if requeue is None:
                await _settle(message.ack())
            elif requeue:
                await _settle(message.nack(requeue=True))
            else:
                await _settle(message.reject(requeue=False))

    # -- stopping ---------------------------------------------------------------------------

    async def stop(self, timeout: float = 8.0) -> None:
        """Stop taking messages, let each batch in progress finish, close the channels.

        Messages received but not started return to the queue when the channel closes.
        """
        self._stopping = True
        # Nothing waiting in a lane starts from now on: dropped before the first await, so a
        # batch that finishes while the cancels travel cannot hand its key's next message on.
        for consumer in self._consumers:
            consumer.lanes.drop(lambda _d: True)
        for consumer in self._consumers:
            for source in consumer.sources:
                await _cancel(source)
        await self._settled_until(lambda: not any(c.busy for c in self._consumers), timeout)
        await _cancelled([w for c in self._consumers for w in c.workers], timeout)
        for source in [source for c in self._consumers for source in c.sources]:
            await _close_channel(source)

    async def hand_over(self, consumer: _Consumer, source: Source, timeout: float = 10.0) -> None:
        """Give up being the active consumer of one partition without breaking its order: stop
        starting its messages, let those in progress finish, close its channel (the broker
        returns what was received but not started, and activates the next consumer), then
        register again at the back of the line. Not while the broker is away: the partition
        would be left with no consumer here until it came back."""
        if source.draining or self._stopping or not self._bus.is_connected:
            return
        source.draining = True
        try:
            dropped = consumer.lanes.drop(lambda d: d.source is source)
            source.in_flight -= len(dropped)
            await self._settled_until(lambda: source.in_flight <= 0, timeout)
            await _close_channel(source)
            source.in_flight = 0
            await self._register_again(consumer, source)
            log.info("partition_handed_over", queue=source.queue_name)
        finally:
            source.draining = False

    async def _register_again(self, consumer: _Consumer, source: Source) -> None:
        """Consume ``source`` on a new channel; if the broker went away meanwhile, keep trying
        until it is back: a partition must never be left without this replica in line."""
        delay = 0.5
        while not self._stopping:
            try:
                channel = await self._bus.connection.channel()
                await channel.set_qos(prefetch_count=self._settings.prefetch)
                queue = await channel.get_queue(source.queue_name, ensure=False)
                source.consumer_tag = await queue.consume(self._receiver(consumer, source))
                source.channel, source.queue = channel, queue
                return
            except Exception as exc:
                log.warning("partition_register_failed", queue=source.queue_name, error=repr(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)


async def _forget(conn: asyncpg.Connection, consumer: str, left: list[_Delivery]) -> None:
    """Take back the inbox rows of deliveries not handled after all: they come again."""
    await conn.execute(
        "DELETE FROM inbox WHERE consumer = $1 AND event_id = ANY($2::text[])",
        consumer,
        [d.envelope.id for d in left],
    )


async def prune_inbox(pool: asyncpg.Pool, *, handled_before: datetime) -> None:
    """Forget the ids of events handled before then: a copy redelivered that late is no longer
    recognised (the retention is days, far beyond any redelivery)."""
    await pool.execute("DELETE FROM inbox WHERE handled_at < $1", handled_before)


async def _close_channel(source: Source) -> None:
    if source.channel is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(source.channel.close(), 2)


async def _cancelled(workers: list[asyncio.Task[None]], timeout: float) -> None:
    for worker in workers:
        worker.cancel()
    if workers:
        _done, stuck = await asyncio.wait(workers, timeout=timeout)
        if stuck:
            log.warning("consumer_workers_did_not_stop", workers=len(stuck))


async def _declare_event_exchanges(setup: AbstractChannel) -> dict[str, AbstractExchange]:
    return {e: await setup.declare_exchange(e, "topic", durable=True) for e in EXCHANGES}


async def _declare_dead_letter_queue(setup: AbstractChannel, name: str) -> None:
    dead_letters = await setup.declare_exchange(DEAD_LETTER_EXCHANGE, "direct", durable=True)
    queue = await setup.declare_queue(
        f"{name}.dead-letter", durable=True, arguments={"x-queue-type": "quorum"}
    )
    await queue.bind(dead_letters, routing_key=name)


def _first_of_each(deliveries: Any) -> list[_Delivery]:
    seen: set[str] = set()
    first = []
    for delivery in deliveries:
        if delivery.envelope.id not in seen:
            seen.add(delivery.envelope.id)
            first.append(delivery)
    return first


def _context(envelope: Envelope) -> dict[str, str]:
    context = {
        "topic": envelope.topic,
        "event_id": envelope.id,
        "correlation_id": envelope.correlationid or envelope.id,
    }
    if envelope.subject:
        context["subject"] = envelope.subject
    return {**context, **tracing.ids_of(envelope.traceparent)}


def _trace_context(envelope: Envelope) -> Context:
    return tracing.context_of(envelope.traceparent, envelope.tracestate)


def _handling(envelopes: list[Envelope]) -> contextlib.AbstractContextManager[object]:
    """The span messages are handled in: a child of the (first traced) message's trace, linked
    to the others of a batch; none for messages made outside any trace (heartbeats)."""
    traced = [e for e in envelopes if e.traceparent]
    if not traced:
        return contextlib.nullcontext()
    first = traced[0]
    return tracing.span(
        f"{first.topic} process",
        parent=_trace_context(first),
        kind=SpanKind.CONSUMER,
        links=[_trace_context(e) for e in traced[1:]],
        attributes={"messaging.system": "rabbitmq", "messaging.message.id": first.id},
    )


def _stale(delivery: _Delivery) -> bool:
    """Received on a channel that has since closed: it cannot be acked, and will come again."""
    channel = delivery.message.channel
    return bool(getattr(channel, "is_closed", False))


async def _cancel(source: Source) -> None:
    if source.queue is not None and source.consumer_tag is not None:
        # Bounded: on a connection that is down, aio-pika would wait for it to return.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(source.queue.cancel(source.consumer_tag), 2)


async def _settle(settlement: Awaitable[None]) -> None:
    """Settle; if the channel died meanwhile, the broker redelivers and the inbox dedupes."""
    try:
        await settlement
    except Exception as exc:
        log.warning("settle_failed_message_will_return", error=repr(exc))
