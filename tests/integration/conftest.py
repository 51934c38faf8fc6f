"""Integration fixtures: the gateway runs in-process with its real lifespan (migrations, bootstrap
admin, consumers, outbox relay) against the session's RabbitMQ vhost and PostgreSQL database."""

from collections.abc import AsyncIterator

import pytest

from tests.integration.api import Api, gateway_settings, running_gateway


@pytest.fixture
async def api(amqp_url: str, database_url: str) -> AsyncIterator[Api]:
    async with running_gateway(gateway_settings(amqp_url, database_url)) as running:
        yield running
