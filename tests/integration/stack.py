"""The scheduler and poller in-process, on the session's bus and database, for cloud tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from pathlib import Path

from services.poller.wiring import poller_parts
from services.quota.handlers import subscriptions
from services.scheduler.wiring import scheduler_parts
from shared.config import PollerSettings, SchedulerSettings
from shared.db import service_migrations
from shared.runtime import ServiceRuntime
from shared.testing import wait_until
from tests.integration.api import SESSION_KEY, Api
from tests.integration.support import settings_for

ROOT = Path(__file__).resolve().parents[2]
FAST = {"boot": 0.3, "stop": 0.3, "reboot": 0.3, "terminate": 0.3}
POLL_INTERVAL = 0.5
IDLE_POLL_INTERVAL = 10 * POLL_INTERVAL  # the poller's default: ten times the fast one


def scheduler_runtime(amqp_url: str, database_url: str, **overrides: object) -> ServiceRuntime:
    base = settings_for(amqp_url, database_url, secret_key=SESSION_KEY)
    settings = SchedulerSettings(**{**base.model_dump(), "secret_key": SESSION_KEY, **overrides})
    handlers, loops = scheduler_parts(settings)
    return ServiceRuntime(
        "scheduler",
        settings,
        service_migrations(ROOT / "services" / "scheduler"),
        subscriptions=handlers,
        background=loops,
    )


def quota_runtime(amqp_url: str, database_url: str) -> ServiceRuntime:
    return ServiceRuntime(
        "quota",
        settings_for(amqp_url, database_url),
        service_migrations(ROOT / "services" / "quota"),
        subscriptions=lambda _rt: subscriptions(),
    )


def poller_runtime(
    amqp_url: str, database_url: str, replica: str = "", **overrides: object
) -> ServiceRuntime:
    base = settings_for(amqp_url, database_url, secret_key=SESSION_KEY)
    settings = PollerSettings(
        **{
            **base.model_dump(),
            "secret_key": SESSION_KEY,
            "poll_interval": POLL_INTERVAL,
            "replica_id": replica or f"poller-{uuid.uuid4().hex[:6]}",
            **overrides,
        }
    )
    handlers, loops = poller_parts(settings)
    return ServiceRuntime(
        "poller",
        settings,
        service_migrations(ROOT / "services" / "poller"),
        subscriptions=handlers,
        background=loops,
    )


async def simulator_account(
    api: Api,
    url: str,
    grants: list[str],
    *,
    name: str = "",
    followers: tuple[ServiceRuntime, ...] = (),
    api_key: str = "",
    **behaviour: object,
) -> dict:
    """Register a simulated-cloud account and wait until every follower service knows it."""
    response = await api.client.post(
        "/v1/provider-accounts",
        json={
            "name": name or f"sim-{uuid.uuid4().hex[:8]}",
            "provider": "simulator",
            "credentials": {
                "api_key": api_key or f"k-{uuid.uuid4().hex[:8]}",
                "api_secret": "s3cret",
            },
            "config": {
                "endpoint": url,
                "regions": ["north", "south"],
                "poll_interval": POLL_INTERVAL,
                "simulator": {"timings": FAST, **behaviour},
            },
            "grants": grants,
        },
        headers=await api.admin(),
    )
    assert response.status_code == 201, response.text
    account = response.json()
    await known_to(account["id"], followers)
    return account


async def known_to(account_id: str, services: Iterable[ServiceRuntime]) -> None:
    """Wait until each service has recorded the account from provider_account.changed."""
    for service in services:

        async def known(service: ServiceRuntime = service) -> bool:
            return bool(
                await service.pool.fetchval("SELECT 1 FROM accounts WHERE id = $1", account_id)
            )

        await wait_until(known, timeout=10, what=f"{service.service} knows the account")
