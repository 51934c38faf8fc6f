"""Announcing a provider account's whole state (credentials sealed) to the services that use it."""

from __future__ import annotations

import asyncpg

from services.gateway import SOURCE
from services.gateway.repository import accounts
from services.gateway.schemas import ProviderAccountOut
from shared.events import ProviderAccountChanged
from shared.outbox import add_to_outbox


async def announce_account(
    conn: asyncpg.Connection, account_id: str, *, deleted: bool = False
) -> ProviderAccountOut:
    """Queue ``provider_account.changed`` in the caller's transaction; returns the public view.
    ``deleted``: the last announcement, before the caller deletes the row."""
    account = await accounts.account_with_grants(conn, account_id)
    if account is None:
        raise LookupError(f"no provider account {account_id}")
    sealed = await accounts.sealed_credentials(conn, account_id)
    await add_to_outbox(
        conn,
        ProviderAccountChanged(
            account_id=account_id,
            name=account.name,
            provider=account.provider,
            config=account.config,
            grants=account.grants,
            credentials=sealed,
            revision=account.revision,
            deleted=deleted,
        ),
        source=SOURCE,
    )
    return account
