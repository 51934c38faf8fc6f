"""Quota's runtime, built one way for ``__main__`` and the tests."""

from __future__ import annotations

from pathlib import Path

from services.quota.handlers import SUBSCRIPTIONS
from services.quota.reconcile import reconcile_forever
from shared.config import QuotaSettings
from shared.db import service_migrations
from shared.runtime import Clock, Parts, ServiceRuntime, utcnow


def build(settings: QuotaSettings, *, clock: Clock = utcnow) -> ServiceRuntime:
    def wire(rt: ServiceRuntime) -> Parts:
        interval = settings.quota_reconcile_interval
        return Parts(loops={"drift_repair": lambda: reconcile_forever(rt.pool, interval, clock)})

    return ServiceRuntime(
        "quota",
        settings,
        service_migrations(Path(__file__).parent),
        SUBSCRIPTIONS,
        wire,
        clock=clock,
    )
