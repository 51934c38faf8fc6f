"""Each account's catalog (sizes, images, regions, prices), kept in memory: placement reads it for
every launch, so the cloud is asked only when it is missing, older than the refresh interval,
or after a create on that account failed (the catalog may be what was wrong).

Catalogs are read eagerly too (:func:`read_catalogs_forever`): soon after an account is recorded
and whenever one goes stale, so the gateway, which prices launches from the
``provider_account.catalog_read`` each read publishes, knows prices before the first launch.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import NoReturn

import asyncpg
import structlog

from services.scheduler import SOURCE
from services.scheduler.cloud_calls import CatalogRead, describe, read_catalog
from shared.accounts import Account
from shared.clouds.connections import CloudConnections
from shared.events import CatalogSize, ProviderAccountCatalogRead
from shared.loops import every
from shared.outbox import add_to_outbox
from shared.runtime import Clock

log = structlog.get_logger(__name__)

# Seconds between two looks for missing or stale catalogs (fewer if the refresh is shorter); a
# read that failed is tried again at the next look.
CATALOG_ROUND = 30.0

Announce = Callable[[Account, CatalogRead], Awaitable[None]]


@dataclass
class _Entry:
    revision: int
    read_at: float
    read: CatalogRead
    announced: bool = False


@dataclass
class CatalogCache:
    clouds: CloudConnections
    refresh_after: float = 600.0
    clock: Callable[[], float] = time.monotonic
    # Publishes each catalog read from a cloud (CatalogAnnouncer); None: nobody is told.
    announce: Announce | None = None
    _entries: dict[str, _Entry] = field(default_factory=dict)
    _reading: dict[str, asyncio.Lock] = field(default_factory=dict)
    _due: asyncio.Event = field(default_factory=asyncio.Event)
    reads: int = 0  # catalogs fetched from clouds (for tests and benchmarks)

    async def get(self, account: Account) -> CatalogRead:
        found = self._fresh(account)
        if found is not None:
            return found
        # One read per account at a time; launches that wait for it share the result.
        async with self._reading.setdefault(account.id, asyncio.Lock()):
            found = self._fresh(account)
            if found is not None:
                return found
            read = await self.clouds.call(
                account, functools.partial(read_catalog, config=account.config), read_only=True
            )
            self.reads += 1
            entry = _Entry(account.revision, self.clock(), read)
            self._entries[account.id] = entry
        await self._announce(account, entry)
        return read

    def _fresh(self, account: Account) -> CatalogRead | None:
        entry = self._entries.get(account.id)
        if entry is None or entry.revision != account.revision:
            return None
        if self.clock() - entry.read_at > self.refresh_after:
            return None
        return entry.read

    async def _announce(self, account: Account, entry: _Entry) -> None:
        """Publish the read (its own short transaction, after the cloud call). A failure leaves
        it unannounced, for the next round to publish: the read itself still serves launches."""
        if self.announce is None:
            return
        try:
            await self.announce(account, entry.read)
        except Exception as error:
            log.warning(
                "catalog_not_announced",
                account=account.name,
                account_id=account.id,
                error=describe(error),
            )
            return
        entry.announced = True

    async def refresh(self, accounts: Iterable[Account]) -> None:
        """Read every missing or stale catalog of ``accounts`` (each within its account's cloud
        budget, as :meth:`get`), and publish those read but not announced yet. A failed read is
        logged, naming the account and the cause, and left for the next round."""
        await asyncio.gather(*(self._refresh_one(a) for a in accounts))

    async def _refresh_one(self, account: Account) -> None:
        if self._fresh(account) is None:
            try:
                await self.get(account)
            except Exception as error:
                log.warning(
                    "catalog_read_failed",
                    account=account.name,
                    account_id=account.id,
                    error=describe(error),
                )
            return
        entry = self._entries[account.id]
        if not entry.announced:
            await self._announce(account, entry)

    def forget(self, account_id: str) -> None:
        self._entries.pop(account_id, None)
        self._due.set()  # a changed or new account: read its catalog soon

    async def until_due(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._due.wait(), seconds)
        self._due.clear()

    def cached(self, account: Account) -> CatalogRead | None:
        """The account's catalog as last read under its current revision, fresh or not (never
        asks the cloud)."""
        entry = self._entries.get(account.id)
        return entry.read if entry is not None and entry.revision == account.revision else None


def catalog_read_event(
    account: Account, read: CatalogRead, now: Clock
) -> ProviderAccountCatalogRead:
    catalog = read.catalog
    return ProviderAccountCatalogRead(
        account_id=account.id,
        revision=account.revision,
        sizes=[
            CatalogSize(
                id=s.id, cpus=s.cpus, memory_mb=s.memory_mb, price_per_hour=s.price_per_hour
            )
            for s in catalog.sizes
        ],
        regions=list(catalog.regions),
        read_at=now(),
    )


@dataclass(frozen=True)
class CatalogAnnouncer:
    """``provider_account.catalog_read`` through the outbox, in a transaction of its own."""

    pool: asyncpg.Pool
    clock: Clock
    on_commit: Callable[[], None] = lambda: None  # wakes the outbox relay

    async def __call__(self, account: Account, read: CatalogRead) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await add_to_outbox(conn, catalog_read_event(account, read, self.clock), source=SOURCE)
        self.on_commit()


async def read_catalogs_forever(
    catalogs: CatalogCache, accounts: Callable[[], Awaitable[Iterable[Account]]]
) -> NoReturn:
    """Read the live ``accounts``' missing or stale catalogs every round, and at once when an
    account changes (:meth:`CatalogCache.forget`)."""

    async def step() -> None:
        await catalogs.refresh(await accounts())

    interval = min(CATALOG_ROUND, catalogs.refresh_after)
    await every(interval, step, name="catalog_reads", log=log, wait=catalogs.until_due)
