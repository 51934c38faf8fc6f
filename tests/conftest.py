"""What is real in these tests, and what is faked.

Real: RabbitMQ and PostgreSQL. Integration and end-to-end tests reach them at BOREAS_AMQP_URL and
BOREAS_DATABASE_URL (the contract's defaults when unset). Where neither answers but a Docker engine
exists, testcontainers starts them. Otherwise every test that needs them fails with a message
naming what to start — nothing is skipped, because a skipped test proves nothing.

Isolation: each test session gets its own database, and RabbitMQ virtual hosts of its own (a new
one for each integration module), all named ``boreas_test_<random>`` and removed at the end, so
runs never see each other's queues or rows.

Faked: nothing of the bus or database. Unit tests (tests/unit) use no I/O at all.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

# The services default to prod; the tests run them (in process and as child processes, which
# inherit this) as a developer's stack, on the guest broker account with loopback webhooks.
# Tests of prod behaviour set BOREAS_ENV themselves.
os.environ["BOREAS_ENV"] = "dev"

from shared.testing import EventProbe
from tests.infra import Infrastructure, provide_infrastructure
from tests.processes import simulator_process


@pytest.fixture(scope="session")
def infra() -> Iterator[Infrastructure]:
    with provide_infrastructure() as provided:
        yield provided


@pytest.fixture(scope="module")
def amqp_url(infra: Infrastructure) -> str:
    """The vhost of the module under way (integration modules each get a new one)."""
    return infra.amqp_url


@pytest.fixture(scope="session")
def database_url(infra: Infrastructure) -> str:
    return infra.database_url


@pytest.fixture(scope="session")
def simulator_url(database_url: str) -> Iterator[str]:
    """The simulated cloud in a process of its own, one per test session (starting one takes
    seconds), keeping its state in the session's database. Its accounts are uuid-named, so
    tests never meet in it, and each account's behaviour (latency, failures, throttling) is
    its own."""
    with simulator_process(database_url) as url:
        yield url


@pytest.fixture
async def probe(amqp_url: str) -> AsyncIterator[EventProbe]:
    async with EventProbe(amqp_url) as watching:
        yield watching


@pytest.fixture
def unique() -> str:
    """A short random suffix for names a test creates (schemas, handlers, queues)."""
    return uuid.uuid4().hex[:10]
