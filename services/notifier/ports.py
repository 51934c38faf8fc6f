"""What the webhook fan-out needs of the notifier's repository.

:mod:`services.notifier.repository` satisfies :class:`FanOutRepository` as a module (mypy checks
it where :func:`services.notifier.handlers.queue_for_webhooks` defaults to it);
``tests/fakes.py`` satisfies it in memory, so the fan-out is unit-tested without a database.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Protocol

import asyncpg

from services.notifier.repository import Outgoing


class FanOutRepository(Protocol):
    async def interested(
        self, conn: asyncpg.Connection, owner: str | None
    ) -> list[tuple[uuid.UUID, list[str]]]: ...

    async def add_deliveries(
        self,
        conn: asyncpg.Connection,
        webhook_ids: list[uuid.UUID],
        message: Outgoing,
        *,
        now: datetime,
    ) -> None: ...
