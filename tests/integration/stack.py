"""The scheduler and poller in-process, on the session's bus and database, for cloud tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from services.poller import bootstrap as poller
from services.quota import bootstrap as quota
from services.scheduler import bootstrap as scheduler
from shared.config import PollerSettings, QuotaSettings, SchedulerSettings
from shared.runtime import Parts, ServiceRuntime
from shared.testing import wait_until
from tests.integration.api import SESSION_KEY, Api
from tests.integration.support import settings_for

FAST = {"boot": 0.3, "stop": 0.3, "reboot": 0.3, "terminate": 0.3}
POLL_INTERVAL = 0.5
IDLE_POLL_INTERVAL = 10 * POLL_INTERVAL  # the poller's default: ten times the fast one


def scheduler_runtime(amqp_url: str, database_url: str, **overrides: object) -> ServiceRuntime:
    settings = settings_for(
        amqp_url, database_url, SchedulerSettings, **{"secret_key": SESSION_KEY, **overrides}
    )
    return scheduler.build(settings)


def quota_runtime(amqp_url: str, database_url: str) -> ServiceRuntime:
    return quota.build(settings_for(amqp_url, database_url, QuotaSettings))


def poller_runtime(
    amqp_url: str, database_url: str, replica: str = "", **overrides: object
) -> ServiceRuntime:
    settings = settings_for(
        amqp_url,
        database_url,
        PollerSettings,
        **{
            "secret_key": SESSION_KEY,
            "poll_interval": POLL_INTERVAL,
            "replica_id": replica or f"poller-{uuid.uuid4().hex[:6]}",
            **overrides,
        },
    )
    return poller.build(settings)


def without_loops(runtime: ServiceRuntime) -> ServiceRuntime:
    """The runtime with its service's handlers and their dependencies, but none of the
    service's own loops (a scheduler whose calls stay pending, say)."""
    wire = runtime.wire
    runtime.wire = lambda rt: Parts(dependencies=wire(rt).dependencies)
    return runtime


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
    return await registered_account(
        api,
        {
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
        followers,
    )


async def registered_account(
    api: Api, body: dict, followers: tuple[ServiceRuntime, ...] = ()
) -> dict:
    """Register a provider account (``body`` as POST /v1/provider-accounts takes it) and wait
    until every follower service knows it."""
    account = await api.register_account(body)
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
