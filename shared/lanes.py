"""Keyed lanes: items of one key leave in arrival order, one batch at a time; items of different
keys are out at the same time. No I/O: the consumer runner feeds it and takes batches from it."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class KeyedLanes(Generic[T]):
    def __init__(self) -> None:
        self._pending: dict[str, deque[T]] = {}
        self._busy: set[str] = set()
        self._ready: deque[str] = deque()  # keys with pending items and none out
        self._has_ready = asyncio.Event()

    def put(self, key: str, item: T) -> None:
        queue = self._pending.get(key)
        if queue is None:
            queue = self._pending[key] = deque()
            if key not in self._busy:
                self._ready.append(key)
                self._has_ready.set()
        queue.append(item)

    async def take(self, max_items: int) -> list[tuple[str, T]]:
        """Wait for work, then take up to ``max_items``: whole runs of each ready key, oldest
        key first. The keys taken stay out until :meth:`release`."""
        while not self._ready:
            self._has_ready.clear()
            await self._has_ready.wait()
        taken: list[tuple[str, T]] = []
        while self._ready and len(taken) < max_items:
            key = self._ready.popleft()
            self._busy.add(key)
            queue = self._pending[key]
            while queue and len(taken) < max_items:
                taken.append((key, queue.popleft()))
            if not queue:
                del self._pending[key]
        if self._ready:
            self._has_ready.set()  # wake another taker for what is left
        return taken

    def release(self, keys: set[str]) -> None:
        for key in keys:
            self._busy.discard(key)
            if key in self._pending:
                self._ready.append(key)
        if self._ready:
            self._has_ready.set()

    def drop(self, unwanted: Callable[[T], bool]) -> list[T]:
        """Remove the items not yet taken for which ``unwanted`` is true; returns them."""
        dropped: list[T] = []
        for key in list(self._pending):
            queue = self._pending[key]
            kept = deque(item for item in queue if not unwanted(item))
            dropped.extend(item for item in queue if unwanted(item))
            if kept:
                self._pending[key] = kept
            else:
                del self._pending[key]
        self._ready = deque(k for k in self._ready if k in self._pending)
        return dropped

    @property
    def waiting(self) -> int:
        return sum(len(q) for q in self._pending.values())

    @property
    def keys_out(self) -> int:
        return len(self._busy)
