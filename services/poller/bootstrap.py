"""The poller's runtime, built one way for ``__main__`` and the tests."""

from __future__ import annotations

from pathlib import Path

from services.poller.handlers import SUBSCRIPTIONS
from services.poller.polling import Poller
from shared.config import PollerSettings
from shared.db import service_migrations
from shared.runtime import Clock, Parts, ServiceRuntime, utcnow


def build(settings: PollerSettings, *, clock: Clock = utcnow) -> ServiceRuntime:
    clouds = settings.cloud_connections()

    def wire(rt: ServiceRuntime) -> Parts:
        poller = Poller(rt.pool, clouds, settings, rt.clock, rt.outbox.wake)
        return Parts(dependencies={"clouds": clouds}, loops={"polling": poller.run})

    return ServiceRuntime(
        "poller",
        settings,
        service_migrations(Path(__file__).parent),
        SUBSCRIPTIONS,
        wire,
        clock=clock,
    )
