"""Webhooks: users register URLs that receive their events, signed per Standard Webhooks.

The gateway keeps the registration and the delivery log; the notifier delivers. Secrets are shown
once (at creation and rotation) and otherwise only travel sealed.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta
from functools import partial
from typing import Annotated

import asyncpg
from fastapi import APIRouter, Body, HTTPException, Response

from services.gateway.deps import (
    CurrentUser,
    Db,
    Gateway,
    GatewayDep,
    visible_or_404,
)
from services.gateway.pagination import (
    CursorParam,
    Keyset,
    LogPageSize,
    NameFilter,
    OwnedPage,
    fetch_page,
)
from services.gateway.problems import Responses
from services.gateway.repository import audit, webhooks
from services.gateway.repository.identity import User
from services.gateway.repository.webhooks import LoggedAttempt
from services.gateway.schemas import (
    DeliveryAttemptPage,
    NewWebhook,
    SecretRotation,
    WebhookOut,
    WebhookPage,
    WebhookWithSecret,
)
from services.gateway.webhook_events import announce_webhook
from shared.credentials import WEBHOOK
from shared.events import PUBLIC, SealedSecret, WebhookSecret
from shared.redaction import redact_url
from shared.webhooks import signing, targets, topics

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

NOT_FOUND: Responses = {404: {"description": "no such webhook (or not yours)"}}
PUBLIC_TOPICS = [cls.TOPIC for cls in PUBLIC]


def _seal(gw: Gateway, webhook_id: uuid.UUID, secret: str) -> SealedSecret:
    return gw.cipher.seal(str(webhook_id), {"secret": secret}, purpose=WEBHOOK)


RESOLVE_SECONDS = 5.0


async def _check_target(url: str, gw: Gateway) -> None:
    target = None
    try:
        target = targets.parse_target(url)
        async with asyncio.timeout(RESOLVE_SECONDS):
            await targets.resolve(target, gw.settings.webhook_networks(), gw.resolver)
    except targets.TargetRefused as refused:
        raise HTTPException(422, str(refused)) from None
    except TimeoutError:
        host = target.host if target else url
        raise HTTPException(422, f"{host} did not resolve within {RESOLVE_SECONDS:g} s.") from None


@router.post(
    "",
    status_code=201,
    response_model=WebhookWithSecret,
    responses={
        403: {"description": "scope all asked by a user"},
        409: {"description": "too many webhooks"},
        422: {"description": "invalid, refused URL, or topics matching nothing"},
    },
)
async def register_webhook(
    body: NewWebhook, user: CurrentUser, db: Db, gw: GatewayDep, response: Response
) -> WebhookWithSecret:
    """The response carries the signing secret; it is not shown again (rotate to get a new one)."""
    scope = body.scope or ("all" if user.is_admin else "own")
    if scope == "all" and not user.is_admin:
        raise HTTPException(403, "Only an admin's webhook may receive everyone's events.")
    if unknown := topics.unmatched(body.topics, PUBLIC_TOPICS):
        raise HTTPException(
            422,
            f"No event topic matches {', '.join(unknown)}; the topics are "
            f"{', '.join(PUBLIC_TOPICS)}.",
        )
    await _check_target(body.url, gw)
    webhook_id, secret, now = uuid.uuid4(), signing.new_secret(), gw.clock()
    async with gw.outbox.transaction(db) as conn:
        await webhooks.lock_owner(conn, user.username)
        if await webhooks.count_live(conn, user.username) >= webhooks.MAX_LIVE_PER_OWNER:
            raise HTTPException(
                409, f"You have {webhooks.MAX_LIVE_PER_OWNER} webhooks; delete one first."
            )
        created = await webhooks.create(
            conn,
            webhook_id=webhook_id,
            owner=user.username,
            scope=scope,
            url=body.url,
            topics=sorted(set(body.topics)),
            secrets=[WebhookSecret(sealed=_seal(gw, webhook_id, secret))],
            now=now,
        )
        await audit.record(
            conn,
            actor=user.username,
            action="webhook_created",
            target=str(webhook_id),
            detail={
                "url": redact_url(body.url),
                "topics": sorted(set(body.topics)),
                "scope": scope,
            },
        )
        await announce_webhook(conn, webhook_id, gw.cipher)
    response.headers["Location"] = f"/v1/webhooks/{webhook_id}"
    return WebhookWithSecret(**created.model_dump(), secret=secret)


@router.get("", response_model=WebhookPage, responses={400: {"description": "bad cursor"}})
async def list_webhooks(user: CurrentUser, db: Db, page: OwnedPage) -> WebhookPage:
    """The caller's webhooks (an admin's: everyone's, ``owner`` filters)."""
    items, next_cursor = await page.fetch(partial(webhooks.page, db), user)
    return WebhookPage(items=items, next_cursor=next_cursor)


async def _visible(
    conn: asyncpg.Connection, user: User, webhook_id: str, *, lock: bool = False
) -> WebhookOut:
    """The webhook if the caller may see it (locked with ``lock``); 404 otherwise."""
    return await visible_or_404(
        partial(webhooks.visible, conn), "webhook", webhook_id, user, lock=lock
    )


@router.get("/{webhook_id}", response_model=WebhookOut, responses=NOT_FOUND)
async def get_webhook(webhook_id: str, user: CurrentUser, db: Db, gw: GatewayDep) -> WebhookOut:
    return await _visible(db, user, webhook_id)


@router.delete("/{webhook_id}", status_code=204, responses=NOT_FOUND)
async def delete_webhook(webhook_id: str, user: CurrentUser, db: Db, gw: GatewayDep) -> Response:
    """Deliveries stop; those still waiting are dropped."""
    async with gw.outbox.transaction(db) as conn:
        found = await _visible(conn, user, webhook_id, lock=True)
        await webhooks.mark_deleted(conn, found.id, gw.clock())
        await audit.record(conn, actor=user.username, action="webhook_deleted", target=webhook_id)
        await announce_webhook(conn, found.id, gw.cipher)
    return Response(status_code=204)


@router.post(
    "/{webhook_id}/rotate-secret",
    response_model=WebhookWithSecret,
    responses=NOT_FOUND,
)
async def rotate_secret(
    webhook_id: str,
    user: CurrentUser,
    db: Db,
    gw: GatewayDep,
    body: Annotated[SecretRotation | None, Body()] = None,
) -> WebhookWithSecret:
    """A new secret, shown once. Until ``previous_secret_valid_seconds`` have passed, deliveries
    carry two signatures (new and previous), so receivers can switch without losing any."""
    overlap = timedelta(seconds=(body or SecretRotation()).previous_secret_valid_seconds)
    secret, now = signing.new_secret(), gw.clock()
    async with gw.outbox.transaction(db) as conn:
        found = await _visible(conn, user, webhook_id, lock=True)
        kept = [
            WebhookSecret(sealed=s.sealed, expires_at=now + overlap)
            for s in await webhooks.secrets_of(conn, found.id)
            if s.expires_at is None and overlap > timedelta(0)
        ]
        new = WebhookSecret(sealed=_seal(gw, found.id, secret))
        rotated = await webhooks.replace_secrets(conn, found.id, [new, *kept], now)
        await audit.record(
            conn,
            actor=user.username,
            action="webhook_secret_rotated",
            target=webhook_id,
            detail={"previous_secret_valid_seconds": int(overlap.total_seconds())},
        )
        await announce_webhook(conn, found.id, gw.cipher)
    return WebhookWithSecret(**rotated.model_dump(), secret=secret)


@router.post("/{webhook_id}/enable", response_model=WebhookOut, responses=NOT_FOUND)
async def enable_webhook(webhook_id: str, user: CurrentUser, db: Db, gw: GatewayDep) -> WebhookOut:
    """Deliver again to a webhook disabled by a 410 Gone (events from now on)."""
    async with gw.outbox.transaction(db) as conn:
        found = await _visible(conn, user, webhook_id, lock=True)
        if found.state == "active":
            return found
        await _check_target(found.url, gw)
        enabled = await webhooks.enable(conn, found.id, gw.clock())
        await audit.record(conn, actor=user.username, action="webhook_enabled", target=webhook_id)
        await announce_webhook(conn, found.id, gw.cipher)
    return enabled


ATTEMPTS_NEWEST_FIRST: Keyset[LoggedAttempt] = Keyset(
    lambda a: (a.attempt.attempted_at.isoformat(), a.report_id), (datetime.fromisoformat, str)
)


@router.get(
    "/{webhook_id}/deliveries",
    response_model=DeliveryAttemptPage,
    responses={**NOT_FOUND, 400: {"description": "bad cursor"}},
)
async def delivery_log(
    webhook_id: str,
    user: CurrentUser,
    db: Db,
    gw: GatewayDep,
    limit: LogPageSize = 50,
    cursor: CursorParam = None,
    message_id: NameFilter = None,
) -> DeliveryAttemptPage:
    """Every delivery attempt, newest first; ``message_id`` (the event id) narrows to one event."""
    found = await _visible(db, user, webhook_id)
    logged, next_cursor = await fetch_page(
        partial(webhooks.attempts_page, db, found.id, message_id=message_id),
        ATTEMPTS_NEWEST_FIRST,
        limit=limit,
        cursor=cursor,
    )
    return DeliveryAttemptPage(items=[a.attempt for a in logged], next_cursor=next_cursor)
