"""/v1/status is built from heartbeats on the bus: it shows who is really there, and who left."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from services.gateway.app import create_app
from shared.config import GatewaySettings
from shared.services import SERVICES
from shared.testing import wait_until
from tests.integration.support import settings_for, throwaway_runtime


@pytest.fixture
async def gateway(amqp_url: str, database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = GatewaySettings(amqp_url=amqp_url, database_url=database_url, heartbeat_interval=0.5)
    app = create_app(settings)
    async with app.state.runtime:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield client


async def services(client: httpx.AsyncClient) -> dict:
    response = await client.get("/v1/status")
    assert response.status_code == 200
    return response.json()["services"]


async def test_status_lists_the_five_services_and_marks_only_those_heard(
    gateway: httpx.AsyncClient, amqp_url: str, database_url: str
) -> None:
    # The gateway hears its own heartbeat through the bus, like any other service's.
    status = await wait_until(
        lambda: _when(services(gateway), lambda s: s["gateway"]["alive"]), timeout=10
    )
    assert set(status) == set(SERVICES)
    quiet = set(SERVICES) - {"gateway"} - {n for n, s in status.items() if s["alive"]}
    assert quiet, "other services in this database should not be alive yet"

    async with throwaway_runtime("quota", settings_for(amqp_url, database_url)):
        status = await wait_until(
            lambda: _when(services(gateway), lambda s: s["quota"]["alive"]), timeout=10
        )
        assert status["quota"]["replicas"] == 1
        assert status["quota"]["last_seen"] is not None

    # Stopped: after three missed heartbeats (0.5 s each) the quota service is no longer alive.
    status = await wait_until(
        lambda: _when(services(gateway), lambda s: not s["quota"]["alive"]), timeout=10
    )
    assert status["quota"]["replicas"] == 0
    assert status["quota"]["last_seen"] is not None


async def test_health_endpoints(gateway: httpx.AsyncClient) -> None:
    assert (await gateway.get("/healthz")).json() == {"status": "ok"}
    ready = await gateway.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"database": True, "bus": True}


async def test_unknown_route_is_problem_json(gateway: httpx.AsyncClient) -> None:
    response = await gateway.get("/v1/nowhere")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 404
    assert response.json()["detail"] == "There is nothing at /v1/nowhere."
    wrong_method = await gateway.delete("/healthz")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["detail"] == "DELETE is not allowed on /healthz."


async def _when(awaitable, predicate):
    value = await awaitable
    return value if predicate(value) else None
