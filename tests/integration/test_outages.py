"""The stack rides out a RabbitMQ or PostgreSQL restart; /readyz tells the truth meanwhile.

These restart the real broker and database of this machine (each is back before the test ends).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial

import httpx
import pytest

from services.gateway.app import create_app
from shared.config import GatewaySettings
from shared.consumer import Subscription
from shared.events import InstanceRejected
from shared.ordering import OrderKey
from shared.outbox import add_to_outbox
from shared.runtime import ServiceRuntime
from shared.testing import wait_until
from tests.infra import Infrastructure
from tests.integration.support import rejection, settings_for, throwaway_runtime
from tests.integration.test_consumer import Recorder

pytestmark = pytest.mark.chaos

COMEBACK = 90.0  # seconds a restarted broker or database may take to be usable again


@dataclass
class Stack:
    gateway: httpx.AsyncClient
    worker: ServiceRuntime
    recorder: Recorder


@pytest.fixture
async def stack(infra: Infrastructure, unique: str) -> AsyncIterator[Stack]:
    gateway_settings = GatewaySettings(
        amqp_url=infra.amqp_url, database_url=infra.database_url, heartbeat_interval=0.5
    )
    app = create_app(gateway_settings)
    recorder = Recorder()
    worker = throwaway_runtime(
        f"out_{unique}",
        settings_for(infra.amqp_url, infra.database_url),
        [Subscription(InstanceRejected, recorder, name="record", order_by=OrderKey.OWNER)],
    )
    async with app.state.runtime, worker:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield Stack(client, worker, recorder)


async def readiness(client: httpx.AsyncClient) -> tuple[int, dict]:
    response = await client.get("/readyz")
    return response.status_code, response.json()


@asynccontextmanager
async def away(
    gateway: httpx.AsyncClient, stop: Callable[[], object], start: Callable[[], object], what: str
) -> AsyncIterator[dict]:
    """``stop`` a dependency of a ready gateway and yield the body of its /readyz once that says
    503; ``start`` it again on the way out, and wait until /readyz says 200 again."""
    assert (await readiness(gateway))[0] == 200
    await asyncio.to_thread(stop)
    try:
        _, body = await wait_until(
            lambda: _ready_is(gateway, 503), timeout=30, what=f"/readyz 503 with {what} away"
        )
        yield body
    finally:
        await asyncio.to_thread(start)
    await wait_until(lambda: _ready_is(gateway, 200), timeout=COMEBACK, what="/readyz 200 again")


async def test_consumers_and_readiness_survive_a_rabbitmq_restart(
    stack: Stack, infra: Infrastructure, unique: str
) -> None:
    stop, start = partial(infra.rabbit, "stop_app"), partial(infra.rabbit, "start_app")
    async with away(stack.gateway, stop, start, "the bus") as body:
        assert body["bus"] is False and body["database"] is True
        assert body["detail"] == "not ready: bus not connected"
        # A state change committed while the broker is away waits in the outbox.
        during = rejection(f"during-outage-{unique}")
        async with stack.worker.pool.acquire() as conn, conn.transaction():
            await add_to_outbox(conn, during, source=stack.worker.bus.source)
    await stack.recorder.wait_for(during.reason, timeout=COMEBACK)
    after = rejection(f"after-outage-{unique}")
    await stack.worker.bus.publish(after)
    await stack.recorder.wait_for(after.reason)


async def test_service_keeps_working_across_a_postgresql_restart(
    stack: Stack, infra: Infrastructure, unique: str
) -> None:
    stop, start = partial(infra.postgres, "stop"), partial(infra.postgres, "start")
    async with away(stack.gateway, stop, start, "the DB") as body:
        assert body["database"] is False and body["bus"] is True
        # Routes that need the database answer 503 problem+json, not 500.
        response = await stack.gateway.get("/v1/status")
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        # An event arriving now is held, not dead-lettered, until the database is back.
        during = rejection(f"pg-outage-{unique}")
        await stack.worker.bus.publish(during)
    await stack.recorder.wait_for(during.reason, timeout=COMEBACK)
    assert (
        await stack.worker.pool.fetchval(
            "SELECT count(*) FROM effects WHERE note = $1", during.reason
        )
        == 1
    )
    response = await stack.gateway.get("/v1/status")
    assert response.status_code == 200


async def _ready_is(client: httpx.AsyncClient, expected: int) -> tuple[int, dict] | None:
    status, body = await readiness(client)
    return (status, body) if status == expected else None
