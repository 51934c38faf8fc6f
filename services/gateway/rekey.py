"""`python -m services.gateway.rekey`: re-seal every provider account and webhook secret under
the current key.

Rotation, step by step (docs/operations.md): generate a key (`--new-key` prints one), restart the
services with BOREAS_SECRET_KEY=<new> and BOREAS_PREVIOUS_SECRET_KEYS=<old>, run this command, and
once it reports nothing left under the old key, drop BOREAS_PREVIOUS_SECRET_KEYS. Each account is
re-sealed in its own transaction together with a ``provider_account.changed`` event, so the
services that act on clouds receive the new ciphertext (webhooks likewise, with
``webhook.changed`` for the notifier); running it twice is harmless.
"""

from __future__ import annotations

import argparse
import asyncio
import enum
import sys
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

from services.gateway.account_events import announce_account
from services.gateway.repository import accounts, audit, webhooks
from services.gateway.webhook_events import announce_webhook
from shared.config import ServiceSettings
from shared.credentials import WEBHOOK, CredentialCipher, new_key_text
from shared.db import create_pool
from shared.events import WebhookSecret


class Outcome(enum.Enum):
    RESEALED = "resealed"
    UNCHANGED = "unchanged"  # already under the current key
    GONE = "gone"  # deleted meanwhile


Id = TypeVar("Id")


async def _reseal_each(
    pool: asyncpg.Pool,
    all_ids: Callable[[asyncpg.Connection], Awaitable[list[Id]]],
    reseal: Callable[[asyncpg.Connection, Id], Awaitable[Outcome]],
) -> tuple[int, int]:
    """Re-seal each of ``all_ids`` in its own transaction: (re-sealed, already under the current
    key)."""
    async with pool.acquire() as conn:
        ids = await all_ids(conn)
    outcomes: Counter[Outcome] = Counter()
    for item_id in ids:
        async with pool.acquire() as conn, conn.transaction():
            outcomes[await reseal(conn, item_id)] += 1
    return outcomes[Outcome.RESEALED], outcomes[Outcome.UNCHANGED]


async def reseal_accounts(pool: asyncpg.Pool, cipher: CredentialCipher) -> tuple[int, int]:
    """(accounts re-sealed, accounts already under the current key)."""

    async def reseal(conn: asyncpg.Connection, account_id: str) -> Outcome:
        if not await accounts.lock_account(conn, account_id):
            return Outcome.GONE
        sealed = await accounts.sealed_credentials(conn, account_id)
        if sealed.key_id == cipher.current_key_id:
            return Outcome.UNCHANGED
        await accounts.replace_credentials(conn, account_id, cipher.reseal(account_id, sealed))
        await announce_account(conn, account_id)
        await audit.record(
            conn,
            actor="boreas",
            action="credentials_resealed",
            target=account_id,
            detail={"from_key": sealed.key_id, "to_key": cipher.current_key_id},
        )
        return Outcome.RESEALED

    return await _reseal_each(pool, accounts.all_account_ids, reseal)


async def reseal_webhooks(pool: asyncpg.Pool, cipher: CredentialCipher) -> tuple[int, int]:
    """(webhooks re-sealed, webhooks already under the current key)."""

    async def reseal(conn: asyncpg.Connection, webhook_id: uuid.UUID) -> Outcome:
        await webhooks.lock(conn, webhook_id)
        webhook = await webhooks.by_id(conn, webhook_id)
        if webhook is None or webhook.deleted_at is not None:
            return Outcome.GONE
        if all(s.sealed.key_id == cipher.current_key_id for s in webhook.secrets):
            return Outcome.UNCHANGED
        renewed = [
            WebhookSecret(
                sealed=cipher.reseal(str(webhook_id), s.sealed, purpose=WEBHOOK),
                expires_at=s.expires_at,
            )
            for s in webhook.secrets
        ]
        await webhooks.replace_secrets(conn, webhook_id, renewed, webhook.updated_at)
        await announce_webhook(conn, webhook_id, cipher)
        await audit.record(
            conn,
            actor="boreas",
            action="webhook_secret_resealed",
            target=str(webhook_id),
            detail={"to_key": cipher.current_key_id},
        )
        return Outcome.RESEALED

    return await _reseal_each(pool, webhooks.all_ids, reseal)


async def main() -> int:
    settings = ServiceSettings()
    pool = await create_pool(settings.database_url, "gateway")
    try:
        resealed, unchanged = await reseal_accounts(pool, settings.credential_cipher())
        hooks_resealed, hooks_unchanged = await reseal_webhooks(pool, settings.credential_cipher())
    finally:
        await pool.close()
    print(f"re-sealed {resealed} account(s); {unchanged} already under the current key")
    print(f"re-sealed {hooks_resealed} webhook(s); {hooks_unchanged} already under the current key")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--new-key", action="store_true", help="print a fresh key and exit")
    if parser.parse_args().new_key:
        print(new_key_text())
        sys.exit(0)
    sys.exit(asyncio.run(main()))
