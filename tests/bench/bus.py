"""The bus paths Boreas is built on, each next to the bare aio-pika or asyncpg operation it
wraps, on the same broker and database: what the envelope, outbox, inbox and transaction cost.
And webhook delivery against bare HTTP POSTs."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

import aio_pika

from shared.bus import Bus
from shared.consumer import Subscription, UnitOfWork
from shared.events import EXCHANGE, Envelope, InstanceRejected
from shared.ordering import OrderKey
from shared.outbox import add_to_outbox
from shared.runtime import ServiceRuntime
from tests.bench.webhooks import measure_webhooks
from tests.integration.support import rejection, settings_for, throwaway_runtime


async def timed(n: int, body: Callable[[], Awaitable[None]]) -> float:
    began = time.perf_counter()
    await body()
    return n / (time.perf_counter() - began)


async def raw_confirmed_publish(url: str, n: int) -> float:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(EXCHANGE, "topic", durable=True)
        payload = Envelope.wrap(rejection(), source="bench").to_bytes()

        async def run() -> None:
            for _ in range(n):
                await exchange.publish(
                    aio_pika.Message(payload, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key="bench.raw",
                )

        return await timed(n, run)


async def bus_publish(url: str, n: int) -> float:
    bus = Bus(url, source="boreas/bench")
    await bus.connect()
    try:

        async def run() -> None:
            for _ in range(n):
                await bus.publish(rejection(), mandatory=False)

        return await timed(n, run)
    finally:
        await bus.close()


async def raw_insert_commit(runtime: ServiceRuntime, n: int) -> float:
    async def run() -> None:
        for i in range(n):
            async with runtime.pool.acquire() as conn, conn.transaction():
                await conn.execute("INSERT INTO effects VALUES ($1, 'raw')", str(i))

    return await timed(n, run)


async def outbox_commit_to_broker(runtime: ServiceRuntime, url: str, n: int) -> float:
    """Commit n events through the outbox and wait until the broker has routed every one."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(EXCHANGE, "topic", durable=True)
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, routing_key="instance.rejected")
        arrived = asyncio.Event()
        count = 0

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal count
            count += 1
            if count >= n:
                arrived.set()

        await queue.consume(on_message, no_ack=True)

        async def run() -> None:
            for _ in range(n):
                async with runtime.pool.acquire() as conn, conn.transaction():
                    await add_to_outbox(conn, rejection(), source=runtime.bus.source)
            await arrived.wait()

        return await timed(n, run)


# Publishes in flight together while filling a queue to consume.
FILL_BATCH = 200


async def raw_consume_ack(
    url: str, n: int, payload: bytes | None = None, prefetch: int = 64
) -> float:
    """Messages per second a bare consumer takes and acks, one by one, from a quorum queue (as
    the services' queues are), with the services' default prefetch."""
    if payload is None:
        payload = Envelope.wrap(rejection(), source="bench").to_bytes()
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        queue = await channel.declare_queue(
            f"bench.raw_consume.{uuid.uuid4().hex[:8]}",
            durable=True,
            arguments={"x-queue-type": "quorum"},
        )
        message = aio_pika.Message(payload, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
        for start in range(0, n, FILL_BATCH):
            await asyncio.gather(
                *(
                    channel.default_exchange.publish(message, routing_key=queue.name)
                    for _ in range(min(FILL_BATCH, n - start))
                )
            )
        done = asyncio.Event()
        seen = 0

        async def on_message(incoming: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal seen
            await incoming.ack()
            seen += 1
            if seen >= n:
                done.set()

        began = time.perf_counter()
        consumer_tag = await queue.consume(on_message)
        await done.wait()
        rate = n / (time.perf_counter() - began)
        await queue.cancel(consumer_tag)
        await queue.delete(if_unused=False, if_empty=False)
        return rate


async def runner_consume(url: str, database_url: str, n: int) -> float:
    """Handle n events through the consumer runner: decode, inbox, transaction, ack."""
    handled = 0
    done = asyncio.Event()

    async def handler(event: InstanceRejected, uow: UnitOfWork) -> None:
        nonlocal handled
        handled += 1
        if handled >= n:
            done.set()

    def runtime() -> ServiceRuntime:
        return throwaway_runtime(
            "bench_consumer",
            settings_for(url, database_url, prefetch=16),
            [Subscription(InstanceRejected, handler, name="count", order_by=OrderKey.OWNER)],
        )

    async with runtime():
        pass  # declares and binds the queue; then fill it while nobody consumes
    bus = Bus(url, source="boreas/bench")
    await bus.connect()
    for _ in range(n):
        await bus.publish(rejection())
    await bus.close()
    began = time.perf_counter()
    async with runtime():
        await done.wait()
        return n / (time.perf_counter() - began)


async def measure_bus(url: str, database_url: str, n: int) -> dict[str, float]:
    """Figures (events/s) and their ceilings, keyed for .bench/latest.json."""
    figures: dict[str, float] = {}
    raw_pub = await raw_confirmed_publish(url, n)
    figures["bus_publish_per_s"] = await bus_publish(url, n)
    figures["ceiling_bus_publish_per_s"] = raw_pub
    async with throwaway_runtime("bench_outbox", settings_for(url, database_url)) as rt:
        raw_tx = await raw_insert_commit(rt, n)
        figures["bus_outbox_per_s"] = await outbox_commit_to_broker(rt, url, n)
        # A commit and a confirmed publish, one after the other.
        figures["ceiling_bus_outbox_per_s"] = 1 / (1 / raw_tx + 1 / raw_pub)
    raw_ack = await raw_consume_ack(url, n)
    figures["bus_consume_per_s"] = await runner_consume(url, database_url, n)
    # A bare consume+ack and a bare INSERT+COMMIT, one after the other.
    figures["ceiling_bus_consume_per_s"] = 1 / (1 / raw_ack + 1 / raw_tx)
    _, webhook, webhook_ceiling = await measure_webhooks(url, database_url, n)
    figures["webhook_per_s"] = webhook
    figures["ceiling_webhook_per_s"] = webhook_ceiling
    return {k: round(v) for k, v in figures.items()}
