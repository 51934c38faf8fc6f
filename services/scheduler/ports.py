"""What the launch and action handlers need of the scheduler's repository, and of the worker.

:mod:`services.scheduler.repository` satisfies :class:`CallsRepository` as a module (mypy checks
it where the handlers default to it); ``tests/fakes.py`` satisfies it in memory, so the handlers
are unit-tested without a database (cosmicpython's abstract repository, as a Protocol). The rows
they exchange are the repository's dataclasses, for all three.
"""

from __future__ import annotations

import uuid
from typing import Protocol

import asyncpg

from services.scheduler.placement import Request
from services.scheduler.repository import InstancePlacement, PendingLaunch
from shared.events import Lease


class CallsRepository(Protocol):
    async def lock_instance(self, conn: asyncpg.Connection, instance_id: uuid.UUID) -> None: ...

    async def placement(
        self, conn: asyncpg.Connection, instance_id: uuid.UUID
    ) -> InstancePlacement | None: ...

    async def pending_launch(
        self, conn: asyncpg.Connection, instance_id: uuid.UUID
    ) -> PendingLaunch | None: ...

    async def record(self, conn: asyncpg.Connection, placement: InstancePlacement) -> None: ...

    async def add_call(
        self, conn: asyncpg.Connection, instance_id: uuid.UUID, *, owner: str, action: str
    ) -> None: ...

    async def add_launch(
        self, conn: asyncpg.Connection, instance_id: uuid.UUID, request: Request
    ) -> None: ...

    async def cancel_call(self, conn: asyncpg.Connection, call_id: int) -> None: ...

    async def add_lease(
        self, conn: asyncpg.Connection, instance_id: uuid.UUID, owner: str, lease: Lease
    ) -> None: ...

    async def end_lease(
        self, conn: asyncpg.Connection, instance_id: uuid.UUID, owner: str
    ) -> None: ...


class Waker(Protocol):
    """The cloud worker, as the handlers see it: woken once calls are committed."""

    def wake(self) -> None: ...
