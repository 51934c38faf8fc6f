"""Announcing a webhook's whole state (secrets and URL sealed) to the notifier, which delivers
to it."""

from __future__ import annotations

import uuid

import asyncpg

from services.gateway import SOURCE
from services.gateway.repository import webhooks
from shared.credentials import WEBHOOK_URL, CredentialCipher
from shared.events import WebhookChanged
from shared.outbox import add_to_outbox
from shared.redaction import redact_url


async def announce_webhook(
    conn: asyncpg.Connection, webhook_id: uuid.UUID, cipher: CredentialCipher
) -> None:
    """Queue ``webhook.changed`` in the caller's transaction, the URL sealed (its query may
    hold a token) and shown redacted."""
    webhook = await webhooks.by_id(conn, webhook_id)
    if webhook is None:
        raise LookupError(f"no webhook {webhook_id}")
    await add_to_outbox(
        conn,
        WebhookChanged(
            webhook_id=webhook_id,
            owner=webhook.owner,
            scope=webhook.scope,
            url=redact_url(webhook.url),
            sealed_url=cipher.seal(str(webhook_id), {"url": webhook.url}, purpose=WEBHOOK_URL),
            topics=webhook.topics,
            secrets=webhook.secrets,
            active=webhook.state == "active" and webhook.deleted_at is None,
            deleted=webhook.deleted_at is not None,
            revision=webhook.revision,
        ),
        source=SOURCE,
    )
