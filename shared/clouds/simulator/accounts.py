"""What authenticating a call needs (an account's secret hash and settings), kept in memory for a
short while so that busy accounts do not pay a query per call.

The process that changes an account puts the new entry at once; another simulator process on the
same database sees the change when its entry expires (``ttl`` seconds at most).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import NamedTuple

from shared.clouds.simulator.model import AccountSettings


class AccountEntry(NamedTuple):
    secret_hash: str
    settings: AccountSettings


class AccountCache:
    """``load(api_key)`` reads an account (None: unknown, not remembered). Calls that miss
    together share one load."""

    def __init__(
        self,
        load: Callable[[str], Awaitable[AccountEntry | None]],
        *,
        ttl: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load, self._ttl, self._clock = load, ttl, clock
        self._entries: dict[str, tuple[float, AccountEntry]] = {}
        self._loading: dict[str, asyncio.Future[AccountEntry | None]] = {}

    async def get(self, key: str) -> AccountEntry | None:
        cached = self._entries.get(key)
        if cached is not None and cached[0] > self._clock():
            return cached[1]
        loading = self._loading.get(key)
        if loading is None:
            loading = self._loading[key] = asyncio.ensure_future(self._load(key))
            loading.add_done_callback(lambda done: self._loaded(key, done))
        # Shielded: a caller that goes away does not cancel the load the others wait on.
        return await asyncio.shield(loading)

    def put(self, key: str, entry: AccountEntry) -> None:
        """The account just changed here: answer with ``entry`` from now on, and let no load
        that began before the change overwrite it."""
        self._loading.pop(key, None)
        self._entries[key] = (self._clock() + self._ttl, entry)

    def _loaded(self, key: str, done: asyncio.Future[AccountEntry | None]) -> None:
        if self._loading.get(key) is not done:
            return  # superseded by put()
        del self._loading[key]
        if done.cancelled() or done.exception() is not None:
            return
        entry = done.result()
        if entry is not None:
            self._entries[key] = (self._clock() + self._ttl, entry)
