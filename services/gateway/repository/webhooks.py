"""Webhooks and their delivery log. Sealed signing secrets stay in this module's rows."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, NoReturn

import asyncpg

from services.gateway.repository.owned import OwnedRows
from services.gateway.schemas import DeliveryAttempt, WebhookOut
from shared.events import WebhookDeliveryAttempted, WebhookSecret
from shared.loops import every

# Every column but the sealed secrets: what routes may read.
_PUBLIC = """id, owner, scope, url, topics, state, disabled_reason, revision, created_at,
             updated_at, deleted_at"""

MAX_LIVE_PER_OWNER = 25
LOG_RETENTION = timedelta(days=30)


def _secrets_json(secrets: list[WebhookSecret]) -> str:
    return json.dumps([s.model_dump(mode="json") for s in secrets])


def _secrets(row: asyncpg.Record) -> list[WebhookSecret]:
    return [WebhookSecret.model_validate(s) for s in json.loads(row["secrets"])]


def _with_rotation(row: asyncpg.Record) -> WebhookOut:
    expiring = [s.expires_at for s in _secrets(row) if s.expires_at is not None]
    return WebhookOut(**row, previous_secret_expires_at=max(expiring) if expiring else None)


_LIVE = OwnedRows(
    f"SELECT {_PUBLIC}, secrets FROM webhooks WHERE deleted_at IS NULL", _with_rotation
)
visible = _LIVE.visible  # the live webhook, if the viewer may see it
page = _LIVE.page


@dataclass(frozen=True)
class SealedWebhook:
    """A webhook's whole state, deleted or not, its signing secrets sealed: what announcing it
    takes."""

    id: uuid.UUID
    owner: str
    scope: Literal["own", "all"]
    url: str
    topics: list[str]
    state: Literal["active", "disabled"]
    revision: int
    updated_at: datetime
    deleted_at: datetime | None
    secrets: list[WebhookSecret]


@dataclass(frozen=True)
class LoggedAttempt:
    """A delivery attempt and the key the log keeps it under, which pages of the log are cut at."""

    report_id: str
    attempt: DeliveryAttempt


async def count_live(conn: asyncpg.Connection, owner: str) -> int:
    return await conn.fetchval(
        "SELECT count(*) FROM webhooks WHERE owner = $1 AND deleted_at IS NULL", owner
    )


async def live_ids_of(conn: asyncpg.Connection, owner: str) -> list[uuid.UUID]:
    rows = await conn.fetch(
        "SELECT id FROM webhooks WHERE owner = $1 AND deleted_at IS NULL ORDER BY id FOR UPDATE",
        owner,
    )
    return [r["id"] for r in rows]


async def create(
    conn: asyncpg.Connection,
    *,
    webhook_id: uuid.UUID,
    owner: str,
    scope: str,
    url: str,
    topics: list[str],
    secrets: list[WebhookSecret],
    now: datetime,
) -> WebhookOut:
    """The new webhook, as ``visible`` shows it."""
    row = await conn.fetchrow(
        f"""INSERT INTO webhooks (id, owner, scope, url, topics, secrets, created_at, updated_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
            RETURNING {_PUBLIC}, secrets""",
        webhook_id,
        owner,
        scope,
        url,
        topics,
        _secrets_json(secrets),
        now,
    )
    return _with_rotation(row)


async def lock_owner(conn: asyncpg.Connection, owner: str) -> None:
    """Serialise the owner's registrations until the transaction ends (so a limit holds)."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('webhooks:' || $1))", owner)


async def by_id(conn: asyncpg.Connection, webhook_id: uuid.UUID) -> SealedWebhook | None:
    """The webhook, deleted or not, with its sealed secrets (for announcing it)."""
    row = await conn.fetchrow(
        """SELECT id, owner, scope, url, topics, state, revision, updated_at, deleted_at, secrets
           FROM webhooks WHERE id = $1""",
        webhook_id,
    )
    return SealedWebhook(**{**row, "secrets": _secrets(row)}) if row else None


async def secrets_of(conn: asyncpg.Connection, webhook_id: uuid.UUID) -> list[WebhookSecret]:
    """The webhook's sealed secrets: none once it is deleted, or if there is no such webhook."""
    sealed = await conn.fetchval(
        "SELECT coalesce((SELECT secrets FROM webhooks WHERE id = $1), '[]')", webhook_id
    )
    return [WebhookSecret.model_validate(s) for s in json.loads(sealed)]


async def replace_secrets(
    conn: asyncpg.Connection, webhook_id: uuid.UUID, secrets: list[WebhookSecret], now: datetime
) -> WebhookOut:
    """The webhook as it shows now; the caller holds its row locked (``visible(for_update)``)."""
    row = await conn.fetchrow(
        f"""UPDATE webhooks SET secrets = $2, revision = revision + 1, updated_at = $3
            WHERE id = $1
            RETURNING {_PUBLIC}, secrets""",
        webhook_id,
        _secrets_json(secrets),
        now,
    )
    return _with_rotation(row)


async def enable(conn: asyncpg.Connection, webhook_id: uuid.UUID, now: datetime) -> WebhookOut:
    """The webhook as it shows now; the caller holds its row locked (``visible(for_update)``)."""
    row = await conn.fetchrow(
        f"""UPDATE webhooks SET state = 'active', disabled_reason = NULL,
                   revision = revision + 1, updated_at = $2
            WHERE id = $1
            RETURNING {_PUBLIC}, secrets""",
        webhook_id,
        now,
    )
    return _with_rotation(row)


async def mark_deleted(conn: asyncpg.Connection, webhook_id: uuid.UUID, now: datetime) -> None:
    """The row stays (its revision orders late announcements); its secrets go."""
    await conn.execute(
        """UPDATE webhooks SET deleted_at = $2, revision = revision + 1, updated_at = $2,
                  secrets = '[]'
           WHERE id = $1""",
        webhook_id,
        now,
    )


async def apply_disabled(
    conn: asyncpg.Connection, webhook_id: uuid.UUID, *, revision: int, reason: str, at: datetime
) -> None:
    """The notifier disabled ``revision``; a webhook changed since (re-enabled) stays as it is."""
    await conn.execute(
        """UPDATE webhooks SET state = 'disabled', disabled_reason = $3, updated_at = $4
           WHERE id = $1 AND revision = $2 AND deleted_at IS NULL""",
        webhook_id,
        revision,
        reason,
        at,
    )


async def lock(conn: asyncpg.Connection, webhook_id: uuid.UUID) -> None:
    await conn.execute("SELECT 1 FROM webhooks WHERE id = $1 FOR UPDATE", webhook_id)


async def all_ids(conn: asyncpg.Connection) -> list[uuid.UUID]:
    return [r["id"] for r in await conn.fetch("SELECT id FROM webhooks WHERE deleted_at IS NULL")]


async def record_attempt(
    conn: asyncpg.Connection, report_id: str, report: WebhookDeliveryAttempted
) -> None:
    await conn.execute(
        """INSERT INTO webhook_attempts (report_id, webhook_id, message_id, message_topic,
               attempt, outcome, status_code, error, duration_ms, attempted_at, next_attempt_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
           ON CONFLICT (report_id) DO NOTHING""",
        report_id,
        report.webhook_id,
        report.message_id,
        report.message_topic,
        report.attempt,
        report.outcome,
        report.status_code,
        report.error,
        report.duration_ms,
        report.attempted_at,
        report.next_attempt_at,
    )


async def attempts_page(
    conn: asyncpg.Connection | asyncpg.Pool,
    webhook_id: uuid.UUID,
    *,
    limit: int,
    after: tuple[datetime, str] | None,
    message_id: str | None,
) -> list[LoggedAttempt]:
    """Up to ``limit`` of the webhook's delivery attempts, newest first, after the key ``after``."""
    rows = await conn.fetch(
        """SELECT report_id, message_id, message_topic, attempt, outcome, status_code, error,
                  duration_ms, attempted_at, next_attempt_at
           FROM webhook_attempts
           WHERE webhook_id = $1
             AND ($3::timestamptz IS NULL OR (attempted_at, report_id) < ($3, $4))
             AND ($5::text IS NULL OR message_id = $5)
           ORDER BY attempted_at DESC, report_id DESC LIMIT $2""",
        webhook_id,
        limit,
        *(after or (None, None)),
        message_id,
    )
    return [LoggedAttempt(row["report_id"], DeliveryAttempt(**row)) for row in rows]


async def prune_attempts_forever(pool: asyncpg.Pool, clock: Callable[[], datetime]) -> NoReturn:
    """Keep a month of delivery log; older attempts go, hourly."""

    async def step() -> None:
        await pool.execute(
            "DELETE FROM webhook_attempts WHERE attempted_at < $1", clock() - LOG_RETENTION
        )

    await every(3600, step, name="webhook_log_pruning")
