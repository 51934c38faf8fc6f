"""Integration fixtures: the gateway runs in-process with its real lifespan (migrations, bootstrap
admin, consumers, outbox relay) against the session's RabbitMQ vhost and PostgreSQL database."""

from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from shared.runtime import ServiceRuntime
from tests.infra import Infrastructure
from tests.integration import api as api_module
from tests.integration.api import Api, gateway_settings, running_gateway
from tests.integration.stack import (
    POLL_INTERVAL,
    poller_runtime,
    quota_runtime,
    scheduler_runtime,
)


@pytest.fixture(scope="module", autouse=True)
def fresh_bus_and_accounts_per_module(infra: Infrastructure) -> Iterator[None]:
    """Each module's queues go with it (see Infrastructure.renew_vhost), and so do the provider
    accounts it registered (Infrastructure.forget_accounts): another module's launches never
    land on them, and its poller never polls them."""
    yield
    infra.renew_vhost()
    infra.forget_accounts()


@pytest.fixture(scope="session", autouse=True)
def credential_checks(simulator_url: str) -> Iterator[None]:
    """The simulated cloud for the tests' gateways to check new accounts' credentials with (see
    gateway_settings). Only the gateways: a test's scheduler and poller reach only the clouds
    its accounts name, so accounts other tests registered never take its launches."""
    api_module.CREDENTIAL_CLOUD = simulator_url
    try:
        yield
    finally:
        api_module.CREDENTIAL_CLOUD = None


@pytest.fixture
async def api(amqp_url: str, database_url: str) -> AsyncIterator[Api]:
    async with running_gateway(gateway_settings(amqp_url, database_url)) as running:
        yield running


@pytest.fixture
async def clouds_side(
    amqp_url: str, database_url: str
) -> AsyncIterator[tuple[ServiceRuntime, ServiceRuntime]]:
    """Quota (which admits launches), a scheduler and a poller, for tests that launch onto a
    cloud; yields the scheduler and the poller."""
    async with (
        quota_runtime(amqp_url, database_url),
        scheduler_runtime(amqp_url, database_url) as scheduler,
        poller_runtime(amqp_url, database_url) as poller,
    ):
        yield scheduler, poller


@pytest.fixture
async def scheduler(amqp_url: str, database_url: str) -> AsyncIterator[ServiceRuntime]:
    """Quota (which admits launches) and a scheduler."""
    async with (
        quota_runtime(amqp_url, database_url),
        scheduler_runtime(amqp_url, database_url) as runtime,
    ):
        yield runtime


@pytest.fixture
def steady_poller(amqp_url: str, database_url: str) -> Callable[..., ServiceRuntime]:
    """Pollers (not started; ``overrides`` as poller_runtime takes them) that poll every account
    at the fast interval, busy or idle, so that a few polls take a moment."""

    def poller(**overrides: object) -> ServiceRuntime:
        return poller_runtime(amqp_url, database_url, poll_idle_interval=POLL_INTERVAL, **overrides)

    return poller
