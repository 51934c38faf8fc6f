"""The scheduler's runtime, built one way for ``__main__`` and the tests."""

from __future__ import annotations

from pathlib import Path

from services.scheduler.catalogs import CatalogCache
from services.scheduler.handlers import SUBSCRIPTIONS
from services.scheduler.upkeep import upkeep_forever
from services.scheduler.worker import AccountBook, CloudWorker
from shared.config import SchedulerSettings
from shared.db import service_migrations
from shared.runtime import Clock, Parts, ServiceRuntime, utcnow


def build(settings: SchedulerSettings, *, clock: Clock = utcnow) -> ServiceRuntime:
    clouds = settings.cloud_connections()
    catalogs = CatalogCache(clouds, refresh_after=settings.catalog_refresh)

    def wire(rt: ServiceRuntime) -> Parts:
        # One cloud worker per process: the handlers queue calls for it, its loop makes them.
        worker = CloudWorker(
            rt.pool,
            clouds,
            catalogs,
            AccountBook(rt.pool),
            rt.clock,
            concurrency=settings.scheduler_concurrency,
            lease=settings.cloud_call_lease,
            on_commit=rt.outbox.wake,
        )
        return Parts(
            dependencies={
                "clouds": clouds,
                "catalogs": catalogs,
                "book": worker.book,
                "worker": worker,
            },
            loops={
                "cloud_calls": worker.run,
                "upkeep": lambda: upkeep_forever(rt.pool, rt.clock),
            },
        )

    return ServiceRuntime(
        "scheduler",
        settings,
        service_migrations(Path(__file__).parent),
        SUBSCRIPTIONS,
        wire,
        clock=clock,
    )
