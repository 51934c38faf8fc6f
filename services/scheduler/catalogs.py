"""Each account's catalog (sizes, images, regions, prices), kept in memory: placement reads it for
every launch, so the cloud is asked only when it is missing, older than the refresh interval,
or after a create on that account failed (the catalog may be what was wrong)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from services.scheduler.cloud_calls import CatalogRead, read_catalog
from shared.accounts import Account
from shared.clouds.connections import CloudConnections


@dataclass
class _Entry:
    revision: int
    read_at: float
    read: CatalogRead


@dataclass
class CatalogCache:
    clouds: CloudConnections
    refresh_after: float = 600.0
    clock: Callable[[], float] = time.monotonic
    _entries: dict[str, _Entry] = field(default_factory=dict)
    _reading: dict[str, asyncio.Lock] = field(default_factory=dict)
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
            read = await self.clouds.call(account, read_catalog, read_only=True)
            self.reads += 1
            self._entries[account.id] = _Entry(account.revision, self.clock(), read)
            return read

    def _fresh(self, account: Account) -> CatalogRead | None:
        entry = self._entries.get(account.id)
        if entry is None or entry.revision != account.revision:
            return None
        if self.clock() - entry.read_at > self.refresh_after:
            return None
        return entry.read

    def forget(self, account_id: str) -> None:
        self._entries.pop(account_id, None)
