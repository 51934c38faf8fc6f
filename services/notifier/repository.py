"""The notifier's tables: its copy of the webhooks, and the deliveries it owes them."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from services.notifier.fairness import Candidate
from shared.events import Envelope, SealedSecret, WebhookChanged, WebhookSecret
from shared.revisions import upsert_newest

WAKE_CHANNEL = "boreas_webhook_deliveries"

# The newest revision of each webhook (shared.revisions); a deleted one stays as a tombstone.
_REMEMBER_WEBHOOK = upsert_newest(
    "webhooks", "id owner scope url topics secrets active deleted revision sealed_url".split()
)


async def remember_webhook(conn: asyncpg.Connection, event: WebhookChanged) -> bool:
    """Keep ``event`` unless a newer revision is already known; True when it was kept."""
    status = await conn.execute(
        _REMEMBER_WEBHOOK,
        event.webhook_id,
        event.owner,
        event.scope,
        event.url,
        event.topics,
        json.dumps([s.model_dump(mode="json") for s in event.secrets]),
        event.active and not event.deleted,
        event.deleted,
        event.revision,
        event.sealed_url.model_dump_json(),
    )
    return status.endswith(" 1")


async def drop_pending(conn: asyncpg.Connection, webhook_id: uuid.UUID, now: datetime) -> int:
    status = await conn.execute(
        """UPDATE deliveries SET state = 'dropped', finished_at = $2, leased_until = NULL
           WHERE webhook_id = $1 AND state = 'pending'""",
        webhook_id,
        now,
    )
    return int(status.split()[-1])


async def interested(
    conn: asyncpg.Connection, owner: str | None
) -> list[tuple[uuid.UUID, list[str]]]:
    """Active webhooks that may receive an event about ``owner``: the owner's, and all-scoped."""
    rows = await conn.fetch(
        """SELECT id, topics FROM webhooks
           WHERE active AND (scope = 'all' OR owner = $1)""",
        owner,
    )
    return [(r["id"], r["topics"]) for r in rows]


@dataclass(frozen=True)
class Outgoing:
    """An event as its webhooks are sent it: deliveries of one ordering key go in order."""

    message_id: str
    topic: str
    ordering_key: str
    body: str

    @classmethod
    def of(cls, envelope: Envelope) -> Outgoing:
        """By instance where the event names one (its subject), else by owner."""
        return cls(
            message_id=envelope.id,
            topic=envelope.topic,
            ordering_key=envelope.subject or f"owner:{envelope.data.get('owner')}",
            body=envelope.to_bytes().decode(),
        )


async def add_deliveries(
    conn: asyncpg.Connection, webhook_ids: list[uuid.UUID], message: Outgoing, *, now: datetime
) -> None:
    await conn.execute(
        """INSERT INTO deliveries (webhook_id, message_id, topic, ordering_key, body, created_at,
                                   next_attempt_at)
           SELECT w.id, $2, $3, $4, $5, $6, $6 FROM webhooks w
           WHERE w.id = ANY($1::uuid[]) AND w.active
           FOR SHARE  -- a webhook deactivated meanwhile is read again, and skipped
           ON CONFLICT (webhook_id, message_id) DO NOTHING""",
        webhook_ids,
        message.message_id,
        message.topic,
        message.ordering_key,
        message.body,
        now,
    )
    # Delivered at commit: wakes the delivery workers without waiting for their next poll.
    await conn.execute(f"NOTIFY {WAKE_CHANNEL}")


@dataclass(frozen=True)
class Claimed:
    """A delivery leased to this replica, with what sending it needs."""

    id: int
    webhook_id: uuid.UUID
    owner: str
    url: str  # redacted, but for webhooks kept before URLs were sealed
    sealed_url: SealedSecret | None
    secrets: list[WebhookSecret]
    message_id: str
    topic: str
    body: str
    attempts: int
    created_at: datetime


async def due(
    pool: asyncpg.Pool,
    *,
    now: datetime,
    per_webhook: int,
    per_owner: int,
    skip_owners: list[str],
) -> list[Candidate]:
    """Deliveries that may be sent now, each the oldest unfinished one of its ordering key, at
    most ``per_webhook`` in flight per webhook (counting those already leased, by any replica)
    and at most ``per_owner`` candidates per webhook owner (the earliest due); none of the
    owners in ``skip_owners``. Each webhook contributes its own earliest rows, so one with a
    large backlog does not starve the others. Which of them go is :func:`fairness.share_out`'s
    choice."""
    rows = await pool.fetch(
        """SELECT id, owner, next_attempt_at FROM (
               SELECT due.id, due.next_attempt_at, w.owner,
                      row_number() OVER (PARTITION BY w.owner
                                         ORDER BY due.next_attempt_at, due.id) AS place
               FROM webhooks w CROSS JOIN LATERAL (
                   SELECT d.id, d.next_attempt_at FROM deliveries d
                   WHERE d.webhook_id = w.id AND d.state = 'pending'
                     AND d.next_attempt_at <= $1
                     AND (d.leased_until IS NULL OR d.leased_until <= $1)
                     AND NOT EXISTS (  -- an earlier one of its key is unfinished
                         SELECT 1 FROM deliveries e
                         WHERE e.webhook_id = d.webhook_id AND e.ordering_key = d.ordering_key
                           AND e.state = 'pending' AND e.id < d.id)
                   ORDER BY d.next_attempt_at, d.id
                   LIMIT greatest($2 - (
                       SELECT count(*) FROM deliveries b
                       WHERE b.webhook_id = w.id AND b.state = 'pending'
                         AND b.leased_until > $1), 0)
               ) due
               WHERE w.active AND w.owner <> ALL($4::text[])
           ) ranked
           WHERE place <= $3""",
        now,
        per_webhook,
        per_owner,
        skip_owners,
    )
    return [Candidate(r["id"], r["owner"], r["next_attempt_at"]) for r in rows]


async def lease(
    pool: asyncpg.Pool, delivery_ids: list[int], *, now: datetime, lease_until: datetime
) -> list[Claimed]:
    """Lease the chosen deliveries to this replica, with what sending them takes.

    Replicas claim concurrently: a row another replica leased since it was chosen fails the
    ``leased_until`` check here and is left out, so each row goes to one replica. A row chosen
    as first of its key is still first: a key's rows are queued one transaction after another
    (the queueing handler is ordered by that key), so none can appear before it."""
    rows = await pool.fetch(
        """UPDATE deliveries d SET leased_until = $3
           FROM webhooks w
           WHERE d.id = ANY($1::bigint[]) AND w.id = d.webhook_id AND d.state = 'pending'
             AND (d.leased_until IS NULL OR d.leased_until <= $2)
           RETURNING d.id, d.webhook_id, w.owner, w.url, w.sealed_url, w.secrets, d.message_id,
                     d.topic, d.body, d.attempts, d.created_at""",
        delivery_ids,
        now,
        lease_until,
    )
    return [
        Claimed(
            **{
                **dict(r),
                "secrets": [WebhookSecret.model_validate(s) for s in json.loads(r["secrets"])],
                "sealed_url": (
                    SealedSecret.model_validate_json(r["sealed_url"]) if r["sealed_url"] else None
                ),
            }
        )
        for r in rows
    ]


async def finish(conn: asyncpg.Connection, delivery_id: int, state: str, now: datetime) -> bool:
    """Delivered or given up; False when the row was dropped meanwhile (webhook deleted)."""
    status = await conn.execute(
        """UPDATE deliveries SET state = $2, attempts = attempts + 1, finished_at = $3,
                                 leased_until = NULL
           WHERE id = $1 AND state = 'pending'""",
        delivery_id,
        state,
        now,
    )
    return status.endswith(" 1")


async def postpone(conn: asyncpg.Connection, delivery_id: int, until: datetime) -> bool:
    status = await conn.execute(
        """UPDATE deliveries SET attempts = attempts + 1, next_attempt_at = $2,
                                 leased_until = NULL
           WHERE id = $1 AND state = 'pending'""",
        delivery_id,
        until,
    )
    return status.endswith(" 1")


async def disable(conn: asyncpg.Connection, webhook_id: uuid.UUID) -> int | None:
    """Mark the webhook inactive; its revision, or None if it already was."""
    return await conn.fetchval(
        "UPDATE webhooks SET active = false WHERE id = $1 AND active RETURNING revision",
        webhook_id,
    )


@dataclass(frozen=True)
class Tidied:
    dropped: int  # pending deliveries of deactivated webhooks
    forgotten: int  # finished deliveries past their retention


async def tidy(pool: asyncpg.Pool, *, now: datetime, finished_before: datetime) -> Tidied:
    """Forget finished deliveries older than the retention; drop rows queued for a webhook in
    the instant it was deactivated."""
    dropped = await pool.execute(
        """UPDATE deliveries d SET state = 'dropped', finished_at = $1, leased_until = NULL
           FROM webhooks w
           WHERE w.id = d.webhook_id AND NOT w.active AND d.state = 'pending'""",
        now,
    )
    forgotten = await pool.execute(
        "DELETE FROM deliveries WHERE state <> 'pending' AND finished_at < $1", finished_before
    )
    return Tidied(int(dropped.split()[-1]), int(forgotten.split()[-1]))
