"""`make bench`: throughput of Boreas' bus paths against raw ceilings measured in the same run.

Each Boreas path is timed next to the bare aio-pika or asyncpg operation it is built on, on the
same broker and database, so the ratio says what the envelope, outbox, inbox and transaction
cost, whatever the machine. Runs in a vhost and database of its own, removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable

import aio_pika

from shared.bus import Bus
from shared.consumer import Subscription, UnitOfWork
from shared.events import EXCHANGE, Envelope, InstanceRejected
from shared.logging import configure_logging
from shared.ordering import OrderKey
from shared.outbox import add_to_outbox
from shared.runtime import ServiceRuntime
from tests.bench.scale import measure_scale
from tests.bench.webhooks import measure_webhooks
from tests.infra import provide_infrastructure
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


async def raw_consume_ack(url: str, n: int) -> float:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=16)
        queue = await channel.declare_queue("bench.raw_consume", auto_delete=True)
        exchange = channel.default_exchange
        payload = Envelope.wrap(rejection(), source="bench").to_bytes()
        for _ in range(n):
            await exchange.publish(aio_pika.Message(payload), routing_key=queue.name)
        done = asyncio.Event()
        seen = 0

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal seen
            await message.ack()
            seen += 1
            if seen >= n:
                done.set()

        async def run() -> None:
            await queue.consume(on_message)
            await done.wait()

        rate = await timed(n, run)
        await channel.close()
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
            lambda _rt: [
                Subscription(InstanceRejected, handler, name="count", order_by=OrderKey.OWNER)
            ],
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


async def measure(url: str, database_url: str, n: int) -> None:
    rows = []
    raw_pub = await raw_confirmed_publish(url, n)
    rows.append(("publish (confirmed, persistent)", await bus_publish(url, n), raw_pub))
    async with throwaway_runtime("bench_outbox", settings_for(url, database_url)) as rt:
        raw_tx = await raw_insert_commit(rt, n)
        ceiling = 1 / (1 / raw_tx + 1 / raw_pub)  # a commit and a confirmed publish, serially
        rows.append(("outbox: commit → broker", await outbox_commit_to_broker(rt, url, n), ceiling))
    raw_ack = await raw_consume_ack(url, n)
    rows.append(
        (
            "consume: decode+inbox+tx+ack",
            await runner_consume(url, database_url, n),
            1 / (1 / raw_ack + 1 / raw_tx),
        )
    )

    rows.append(await measure_webhooks(url, database_url, n))

    print(f"\nBoreas bus benchmarks, n={n} messages each (events/s; higher is better)\n")
    print(f"{'path':<34}{'boreas':>10}{'ceiling':>10}{'ratio':>8}")
    for name, ours, ceiling in rows:
        print(f"{name:<34}{ours:>10.0f}{ceiling:>10.0f}{ours / ceiling:>8.2f}")
    print(
        "\nceilings: publish = bare aio-pika confirmed publish; outbox = bare INSERT+COMMIT and "
        "bare publish in series;\nconsume = bare aio-pika consume+ack and bare INSERT+COMMIT in "
        "series;\nwebhook = bare httpx POSTs of the same bodies to the same local receiver, "
        "4 in flight.\nSame broker, database and run."
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=2000, help="messages per measurement")
    parser.add_argument("--scale", type=int, default=100_000, help="simulated nodes to list")
    args = parser.parse_args()
    configure_logging("bench", "WARNING")
    with provide_infrastructure() as infra:
        asyncio.run(measure(infra.amqp_url, infra.database_url, args.n))
        scale = measure_scale(infra.database_url, args.scale)
    print(f"\n{'simulated cloud at scale':<34}{'seconds':>10}{'ceiling':>10}{'ratio':>8}")
    for name, seconds, ceiling, note in scale:
        print(f"{name:<34}{seconds:>10.2f}{ceiling:>10.2f}{seconds / ceiling:>8.1f}  {note}")
    print("(ratio here = time / ceiling time: how many times slower than the raw operation)")
