"""Provider accounts as the scheduler and the poller keep them, from ``provider_account.changed``.

Each of those services keeps its own ``accounts`` table in its own schema (the scheduler's adds
``grants`` and ``load``, the poller's its polling columns); what a row of it holds in common, and
how an announced revision is kept, is said here once: the newest revision wins, and a deleted
account stays as a tombstone (:mod:`shared.revisions`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self

from shared.events import ProviderAccountChanged, SealedSecret
from shared.revisions import upsert_newest

if TYPE_CHECKING:  # the row is read by pure modules too (placement): no driver imported there
    import asyncpg


@dataclass(frozen=True)
class Account:
    """A live provider account, its credentials still sealed (opened only to build a driver)."""

    id: str
    name: str
    provider: str
    config: dict[str, Any]
    credentials: SealedSecret
    revision: int

    @classmethod
    def from_row(cls, row: Mapping[str, Any], **more: Any) -> Self:
        """The account in a row of an ``accounts`` table; ``more``: the fields a subclass adds
        from the service's own columns."""
        return cls(
            id=row["id"],
            name=row["name"],
            provider=row["provider"],
            config=json.loads(row["config"]),
            credentials=SealedSecret.model_validate_json(row["credentials"]),
            revision=row["revision"],
            **more,
        )


_COLUMNS = ("id", "name", "provider", "config", "credentials", "revision", "deleted")


async def upsert_account(
    conn: asyncpg.Connection, event: ProviderAccountChanged, **more: object
) -> None:
    """Keep the announced revision unless a newer one is kept already; ``more``: values of the
    service's own columns (the scheduler's ``grants``)."""
    await conn.execute(
        upsert_newest("accounts", (*_COLUMNS, *more)),
        event.account_id,
        event.name,
        event.provider,
        json.dumps(event.config),
        event.credentials.model_dump_json(),
        event.revision,
        event.deleted,
        *more.values(),
    )
