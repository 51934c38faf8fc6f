"""The scheduler's parts, built once per process: what ``__main__`` and the tests both run."""

from __future__ import annotations

from collections.abc import Callable

from services.scheduler.catalogs import CatalogCache
from services.scheduler.handlers import subscriptions
from services.scheduler.upkeep import upkeep_forever
from services.scheduler.worker import AccountBook, CloudWorker
from shared.config import SchedulerSettings
from shared.consumer import Subscription
from shared.runtime import Loops, ServiceRuntime


def scheduler_parts(
    settings: SchedulerSettings,
) -> tuple[Callable[[ServiceRuntime], list[Subscription]], Callable[[ServiceRuntime], Loops]]:
    """The runtime's ``subscriptions`` and ``background``; they share one cloud worker, built
    when the runtime has its pool."""
    clouds = settings.cloud_connections()
    catalogs = CatalogCache(clouds, refresh_after=settings.catalog_refresh)
    built: list[CloudWorker] = []

    def worker(rt: ServiceRuntime) -> CloudWorker:
        if not built:
            built.append(
                CloudWorker(
                    rt.pool,
                    clouds,
                    catalogs,
                    AccountBook(rt.pool),
                    rt.clock,
                    concurrency=settings.scheduler_concurrency,
                    lease=settings.cloud_call_lease,
                    on_commit=rt.outbox.wake,
                )
            )
        return built[0]

    def handlers(rt: ServiceRuntime) -> list[Subscription]:
        return subscriptions(
            clouds=clouds, catalogs=catalogs, book=worker(rt).book, worker=worker(rt)
        )

    def loops(rt: ServiceRuntime) -> Loops:
        return {
            "cloud_calls": worker(rt).run,
            "upkeep": lambda: upkeep_forever(rt.pool, rt.clock),
        }

    return handlers, loops
