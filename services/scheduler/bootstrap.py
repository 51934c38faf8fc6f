"""The scheduler's runtime, built one way for ``__main__`` and the tests."""

from __future__ import annotations

from pathlib import Path

from services.scheduler.catalogs import CatalogAnnouncer, CatalogCache, read_catalogs_forever
from services.scheduler.handlers import SUBSCRIPTIONS
from services.scheduler.lease_checks import check_leases_forever
from services.scheduler.placement import GrantedAccount
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
        # Each catalog read from a cloud is published, for the gateway to price launches with.
        catalogs.announce = CatalogAnnouncer(rt.pool, rt.clock, rt.outbox.wake)

        async def live_accounts() -> list[GrantedAccount]:
            return list((await worker.book.accounts()).values())

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
                "catalog_reads": lambda: read_catalogs_forever(catalogs, live_accounts),
                "lease_checks": lambda: check_leases_forever(
                    rt.pool, rt.clock, settings.lease_check_interval, rt.outbox.wake
                ),
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
