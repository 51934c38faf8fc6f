"""The instance read model: rows written at launch, then moved by events."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

import asyncpg

from services.gateway.repository.owned import OwnedRows
from services.gateway.schemas import InstanceOut

COLUMNS = (
    "id, owner, name, image, cpus, memory_mb, placement, state, account_id, provider, "
    "provider_instance_id, region, reason, created_at, updated_at, expires_at, price_per_hour, "
    'approval_deadline, deployment_id, group_name AS "group"'
)


def _instance(row: asyncpg.Record) -> InstanceOut:
    return InstanceOut(**{**row, "placement": json.loads(row["placement"])})


_OWNED = OwnedRows(f"SELECT {COLUMNS} FROM instances WHERE true", _instance)
visible_instance = _OWNED.visible
page = _OWNED.page


async def insert_requested(
    conn: asyncpg.Connection,
    *,
    instance_id: uuid.UUID,
    owner: str,
    spec: dict[str, Any],
    idempotency_key: str | None,
    request_digest: str | None,
    now: datetime,
    expires_at: datetime | None = None,
    approval_deadline: datetime | None = None,
    deployment_id: uuid.UUID | None = None,
    group: str | None = None,
) -> InstanceOut | None:
    """The new instance, or None if ``owner`` already used ``idempotency_key``; a member of a
    deployment carries its ``deployment_id`` and ``group``."""
    row = await conn.fetchrow(
        f"""INSERT INTO instances (id, owner, name, image, cpus, memory_mb, placement, state,
                                   idempotency_key, request_digest, created_at, updated_at,
                                   expires_at, approval_deadline, deployment_id, group_name)
            VALUES ($1, $2, $3, $4, $5, $6, $7, 'requested', $8, $9, $10, $10, $11, $12, $13,
                    $14)
            ON CONFLICT (owner, idempotency_key) DO NOTHING
            RETURNING {COLUMNS}""",
        instance_id,
        owner,
        spec["name"],
        spec["image"],
        spec["cpus"],
        spec["memory_mb"],
        json.dumps(spec["placement"]),
        idempotency_key,
        request_digest,
        now,
        expires_at,
        approval_deadline,
        deployment_id,
        group,
    )
    return _instance(row) if row else None


async def by_idempotency_key(
    conn: asyncpg.Connection, owner: str, key: str
) -> tuple[InstanceOut, str] | None:
    """The instance ``owner`` launched with ``key``, and the digest of that request."""
    row = await conn.fetchrow(
        f"""SELECT {COLUMNS}, request_digest FROM instances
            WHERE owner = $1 AND idempotency_key = $2""",
        owner,
        key,
    )
    return (_instance(row), row["request_digest"]) if row else None


async def set_state(
    conn: asyncpg.Connection, instance_id: uuid.UUID, state: str, now: datetime
) -> None:
    await conn.execute(
        "UPDATE instances SET state = $2, updated_at = $3 WHERE id = $1", instance_id, state, now
    )


async def record_placement(
    conn: asyncpg.Connection,
    instance_id: uuid.UUID,
    *,
    now: datetime,
    account_id: str,
    provider: str,
    provider_instance_id: str,
    region: str | None,
    reason: str | None,
    price_per_hour: float | None = None,
) -> None:
    """Where the instance went; a requested one becomes pending (a later state stays)."""
    await conn.execute(
        """UPDATE instances SET account_id = $3, provider = $4, provider_instance_id = $5,
               region = $6, reason = $7, price_per_hour = $8, updated_at = $2,
               state = CASE WHEN state = 'requested' THEN 'pending' ELSE state END
           WHERE id = $1""",
        instance_id,
        now,
        account_id,
        provider,
        provider_instance_id,
        region,
        reason,
        price_per_hour,
    )


async def extend_lease(
    conn: asyncpg.Connection, instance_id: uuid.UUID, expires_at: datetime, now: datetime
) -> None:
    """Move the lease's end to ``expires_at`` unless it ends later already (extensions only
    move it on, so any order of applying them ends at the last)."""
    await conn.execute(
        """UPDATE instances SET expires_at = $2, updated_at = $3
           WHERE id = $1 AND expires_at IS NOT NULL AND expires_at < $2""",
        instance_id,
        expires_at,
        now,
    )


async def await_approval(
    conn: asyncpg.Connection, instance_id: uuid.UUID, now: datetime
) -> str | None:
    """Quota reserved room for a held launch: it waits for an answer. When it has moved on
    instead, the state it is in if no cloud ever had it (None otherwise)."""
    moved = await conn.fetchval(
        """UPDATE instances SET state = 'awaiting_approval', updated_at = $2
           WHERE id = $1 AND state = 'requested' RETURNING true""",
        instance_id,
        now,
    )
    if moved:
        return None
    return await conn.fetchval(
        "SELECT state FROM instances WHERE id = $1 AND provider_instance_id IS NULL", instance_id
    )


async def apply_update(
    conn: asyncpg.Connection,
    instance_id: uuid.UUID,
    *,
    now: datetime,
    only_from: tuple[str, ...] | None = None,
    observed_at: datetime | None = None,
    **changes: Any,
) -> bool:
    """Set ``changes`` unless the row is in a state outside ``only_from`` or the observation is
    older than the last one applied. True if the row changed."""
    names = list(changes)
    sets = ", ".join(f"{name} = ${i + 5}" for i, name in enumerate(names))
    status = await conn.execute(
        f"""UPDATE instances SET {sets}, updated_at = $2,
                observed_at = coalesce($4, observed_at)
            WHERE id = $1
              AND ($3::text[] IS NULL OR state = ANY($3))
              AND ($4::timestamptz IS NULL OR observed_at IS NULL OR observed_at <= $4)""",
        instance_id,
        now,
        list(only_from) if only_from else None,
        observed_at,
        *(changes[n] for n in names),
    )
    return status.endswith(" 1")


# Still there on a cloud (or about to be): what deleting its owner or its account must settle.
_LIVE = """state NOT IN ('terminated', 'rejected', 'denied')
           AND NOT (state = 'error' AND provider_instance_id IS NULL)"""


async def live_of_owner(conn: asyncpg.Connection, owner: str) -> list[InstanceOut]:
    """The owner's live instances, locked."""
    rows = await conn.fetch(
        f"SELECT {COLUMNS} FROM instances WHERE owner = $1 AND {_LIVE} ORDER BY id FOR UPDATE",
        owner,
    )
    return [_instance(r) for r in rows]


async def live_on_account(conn: asyncpg.Connection, account_id: str) -> int:
    return await conn.fetchval(
        f"SELECT count(*) FROM instances WHERE account_id = $1 AND {_LIVE}", account_id
    )


async def give_to(
    conn: asyncpg.Connection, instance_ids: list[uuid.UUID], owner: str, now: datetime
) -> None:
    """Transfer the instances to ``owner``. Their Idempotency-Keys stay behind: a key belongs to
    whoever sent it."""
    await conn.execute(
        """UPDATE instances SET owner = $2, idempotency_key = NULL, request_digest = NULL,
               updated_at = $3
           WHERE id = ANY($1::uuid[])""",
        instance_ids,
        owner,
        now,
    )
