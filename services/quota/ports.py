"""What the launch decisions need of the quota repository.

:mod:`services.quota.repository` satisfies :class:`DecisionsRepository` as a module (mypy checks
it where :func:`services.quota.handlers.decide_launches` defaults to it); ``tests/fakes.py``
satisfies it in memory, so decisions are unit-tested without a database.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

import asyncpg

from services.quota.accounting import Amounts, Entry, Limits
from services.quota.budget import Costed


class DecisionsRepository(Protocol):
    async def lock_usages(
        self, conn: asyncpg.Connection, owners: list[str]
    ) -> dict[str, Amounts]: ...

    async def decided_among(
        self, conn: asyncpg.Connection, instance_ids: list[uuid.UUID]
    ) -> set[str]: ...

    async def limits_for(
        self, conn: asyncpg.Connection, owners: list[str]
    ) -> dict[str, Limits]: ...

    async def costing(
        self, conn: asyncpg.Connection, owners: list[str] | None, since: datetime
    ) -> dict[str, list[Costed]]: ...

    async def record_many(
        self,
        conn: asyncpg.Connection,
        entries: list[Entry],
        kept: Mapping[uuid.UUID, dict[str, Any]],
    ) -> None: ...

    async def set_usages(
        self,
        conn: asyncpg.Connection,
        usage: dict[str, Amounts],
        costs: Mapping[str, Decimal],
        at: datetime,
    ) -> None: ...
