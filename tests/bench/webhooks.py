"""Webhook delivery throughput: the notifier's worker against bare HTTP POSTs to one receiver.

The worker's deliveries (claim, open the secret, sign, POST, record the outcome with its report in
the outbox) are timed from a full table to an empty one; the ceiling is the same number of bare
httpx POSTs of the same bodies to the same receiver with the same requests in flight.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable
from datetime import UTC, datetime

import aio_pika
import httpx

from services.notifier import repository
from services.notifier.delivery import WebhookDeliverer
from shared.events import INTERNAL_EXCHANGE, Envelope
from shared.runtime import ServiceRuntime
from shared.testing import wait_until
from tests.integration.support import rejection
from tests.integration.webhooks import (
    Receiver,
    announced_webhook,
    notifier_runtime,
    notifier_settings,
)

IN_FLIGHT = 4  # the default limit per endpoint


async def bare_posts(url: str, bodies: list[bytes]) -> float:
    limit = asyncio.Semaphore(IN_FLIGHT)
    async with httpx.AsyncClient(trust_env=False) as client:

        async def post(body: bytes) -> None:
            async with limit:
                response = await client.post(url, content=body)
                assert response.status_code == 204

        began = time.perf_counter()
        await asyncio.gather(*(post(b) for b in bodies))
        return len(bodies) / (time.perf_counter() - began)


async def worker_deliveries(runtime: ServiceRuntime, url: str, bodies: list[Envelope]) -> float:
    settings = runtime.settings
    cipher = settings.credential_cipher()
    webhook_id = uuid.uuid4()
    async with runtime.pool.acquire() as conn, conn.transaction():
        await repository.remember_webhook(conn, announced_webhook(webhook_id, "bench", url, cipher))
        for envelope in bodies:
            await repository.add_deliveries(
                conn, [webhook_id], repository.Outgoing.of(envelope), now=datetime.now(UTC)
            )

    async def remaining() -> int:
        return await runtime.pool.fetchval(
            "SELECT count(*) FROM deliveries WHERE webhook_id = $1 AND state = 'pending'",
            webhook_id,
        )

    deliverer = WebhookDeliverer(runtime.pool, cipher, settings)  # type: ignore[arg-type]
    began = time.perf_counter()
    worker = asyncio.create_task(deliverer.run())
    await wait_until(lambda: _none(remaining()), timeout=600, interval=0.02)
    rate = len(bodies) / (time.perf_counter() - began)
    worker.cancel()
    await asyncio.gather(worker, return_exceptions=True)
    return rate


async def _none(count: Awaitable[int]) -> bool:
    return await count == 0


async def measure_webhooks(url: str, database_url: str, n: int) -> tuple[str, float, float]:
    receiver = Receiver()
    await receiver.start()
    try:
        envelopes = [Envelope.wrap(rejection(), source="bench") for _ in range(n)]
        ceiling = await bare_posts(receiver.url(), [e.to_bytes() for e in envelopes])
        settings = notifier_settings(url, database_url, webhook_concurrency_per_endpoint=IN_FLIGHT)
        # The reports go somewhere, as they do to the gateway in a deployment (an unroutable
        # report would cost a warning line each).
        async with await aio_pika.connect(url) as connection:
            channel = await connection.channel()
            exchange = await channel.declare_exchange(INTERNAL_EXCHANGE, "topic", durable=True)
            sink = await channel.declare_queue(exclusive=True)
            await sink.bind(exchange, routing_key="webhook.#")
            # Started once for its migrations and consumers; the worker under test runs alone.
            async with notifier_runtime(settings) as runtime:
                ours = await worker_deliveries(runtime, receiver.url(), envelopes)
    finally:
        await receiver.stop()
    return ("webhook: claim+sign+POST+record", ours, ceiling)
