"""The deployment read model: rows written at request, then moved by deployment events; their
members are instance rows carrying ``deployment_id`` and ``group_name``."""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from services.gateway.repository.owned import OwnedRows
from services.gateway.schemas import DeploymentOut, GroupOut, MemberOut

COLUMNS = "id, owner, name, template, parameters, state, reason, failed, created_at, updated_at"

# Once a deployment is being deleted, only these may follow (a deployment quota refused while
# its owner was deleting it ends rejected: nothing of it was ever admitted).
_ENDING = ("deleting", "deleted")
_AFTER_ENDING = ("deleting", "deleted", "rejected")


@dataclass(frozen=True)
class Deployment:
    id: uuid.UUID
    owner: str
    name: str
    template: dict[str, Any]  # parameters substituted; each group's count as last asked
    parameters: dict[str, Any]
    state: str
    reason: str | None
    failed: list[uuid.UUID]
    created_at: datetime
    updated_at: datetime


def _deployment(row: asyncpg.Record) -> Deployment:
    return Deployment(
        id=row["id"],
        owner=row["owner"],
        name=row["name"],
        template=json.loads(row["template"]),
        parameters=json.loads(row["parameters"]),
        state=row["state"],
        reason=row["reason"],
        failed=list(row["failed"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


_OWNED = OwnedRows(f"SELECT {COLUMNS} FROM deployments WHERE true", _deployment)
visible_deployment = _OWNED.visible
page = _OWNED.page


async def insert(
    conn: asyncpg.Connection,
    *,
    deployment_id: uuid.UUID,
    owner: str,
    name: str,
    template: dict[str, Any],
    parameters: dict[str, Any],
    idempotency_key: str | None,
    request_digest: str,
    now: datetime,
) -> Deployment | None:
    """The new deployment (``requested``), or None if ``owner`` already used the key."""
    row = await conn.fetchrow(
        f"""INSERT INTO deployments (id, owner, name, template, parameters, state,
                                     idempotency_key, request_digest, created_at, updated_at)
            VALUES ($1, $2, $3, $4, $5, 'requested', $6, $7, $8, $8)
            ON CONFLICT (owner, idempotency_key) DO NOTHING
            RETURNING {COLUMNS}""",
        deployment_id,
        owner,
        name,
        json.dumps(template),
        json.dumps(parameters),
        idempotency_key,
        request_digest,
        now,
    )
    return _deployment(row) if row else None


async def by_idempotency_key(
    conn: asyncpg.Connection, owner: str, key: str
) -> tuple[Deployment, str] | None:
    """The deployment ``owner`` asked for with ``key``, and the digest of that request."""
    row = await conn.fetchrow(
        f"""SELECT {COLUMNS}, request_digest FROM deployments
            WHERE owner = $1 AND idempotency_key = $2""",
        owner,
        key,
    )
    return (_deployment(row), row["request_digest"]) if row else None


async def set_template(
    conn: asyncpg.Connection, deployment_id: uuid.UUID, template: dict[str, Any], now: datetime
) -> None:
    await conn.execute(
        "UPDATE deployments SET template = $2, updated_at = $3 WHERE id = $1",
        deployment_id,
        json.dumps(template),
        now,
    )


async def start_deleting(conn: asyncpg.Connection, deployment_id: uuid.UUID, now: datetime) -> None:
    """Shown ``deleting`` at once (a rejected one keeps its reason: why nothing of it ran), and
    its members no cloud has yet ``terminating``: the scheduler cancels them (instance.failed
    moves them on to terminated)."""
    await conn.execute(
        """UPDATE deployments SET state = 'deleting', updated_at = $2,
               reason = CASE WHEN state = 'rejected' THEN reason END
           WHERE id = $1""",
        deployment_id,
        now,
    )
    await conn.execute(
        """UPDATE instances SET state = 'terminating', updated_at = $2
           WHERE deployment_id = $1 AND state IN ('requested', 'awaiting_approval')""",
        deployment_id,
        now,
    )


async def apply_state_change(
    conn: asyncpg.Connection,
    deployment_id: uuid.UUID,
    *,
    new_state: str,
    reason: str | None,
    failed: Sequence[uuid.UUID],
    observed_at: datetime,
    now: datetime,
    keep_reason: bool = False,
) -> bool:
    """Move the deployment to ``new_state`` unless a newer observation was applied, or it is
    being deleted (the DELETE shows it at once) and this is an older view; ``keep_reason``: the
    reason it has stays unless this one brings another. True if the row changed."""
    status = await conn.execute(
        """UPDATE deployments SET state = $2, failed = $4, observed_at = $5, updated_at = $6,
               reason = CASE WHEN $9 THEN coalesce($3, reason) ELSE $3 END
           WHERE id = $1 AND (observed_at IS NULL OR observed_at <= $5)
             AND (state <> ALL($7::text[]) OR $2 = ANY($8::text[]))""",
        deployment_id,
        new_state,
        reason,
        list(failed),
        observed_at,
        now,
        list(_ENDING),
        list(_AFTER_ENDING),
        keep_reason,
    )
    return status.endswith(" 1")


async def reject_members(
    conn: asyncpg.Connection,
    deployment_id: uuid.UUID,
    reason: str,
    now: datetime,
    only: Sequence[uuid.UUID] | None = None,
) -> None:
    """Members quota refused (``only`` those, None: all) that no cloud has had: rejected
    (those a DELETE showed terminating too: there is nothing to terminate)."""
    await conn.execute(
        """UPDATE instances SET state = 'rejected', reason = $2, updated_at = $3
           WHERE deployment_id = $1 AND state IN ('requested', 'terminating')
             AND provider_instance_id IS NULL
             AND ($4::uuid[] IS NULL OR id = ANY($4::uuid[]))""",
        deployment_id,
        reason,
        now,
        None if only is None else list(only),
    )


async def members_ever(conn: asyncpg.Connection, deployment_id: uuid.UUID, group: str) -> int:
    """How many members ``group`` has had: the next one is numbered one more."""
    return await conn.fetchval(
        "SELECT count(*) FROM instances WHERE deployment_id = $1 AND group_name = $2",
        deployment_id,
        group,
    )


async def with_groups(
    conn: asyncpg.Connection | asyncpg.Pool, found: Sequence[Deployment]
) -> list[DeploymentOut]:
    """The deployments as the API shows them: each group with its members, in one query."""
    rows = await conn.fetch(
        """SELECT deployment_id, group_name, id, name, state FROM instances
           WHERE deployment_id = ANY($1::uuid[])
           ORDER BY created_at, length(name), name""",
        [d.id for d in found],
    )
    members: dict[tuple[uuid.UUID, str], list[MemberOut]] = defaultdict(list)
    for row in rows:
        members[row["deployment_id"], row["group_name"]].append(
            MemberOut(id=row["id"], name=row["name"], state=row["state"])
        )
    return [
        DeploymentOut(
            id=d.id,
            name=d.name,
            owner=d.owner,
            state=d.state,
            reason=d.reason,
            failed=d.failed,
            on_failure=d.template.get("on_failure", "rollback"),
            parameters=d.parameters,
            created_at=d.created_at,
            updated_at=d.updated_at,
            groups=[
                GroupOut(
                    name=g["name"],
                    count=g["count"],
                    after=g.get("after", []),
                    spread=g.get("spread"),
                    instances=members[d.id, g["name"]],
                )
                for g in d.template["groups"]
            ],
        )
        for d in found
    ]


async def restore_count(
    conn: asyncpg.Connection,
    deployment_id: uuid.UUID,
    group: str,
    asked: int,
    before: int,
    now: datetime,
) -> None:
    """A refused scaling of ``group`` to ``asked``: shown at ``before`` again, unless it has been
    scaled to another count since."""
    await conn.execute(
        """UPDATE deployments SET updated_at = $5,
               template = jsonb_set(template, '{groups}', (
                   SELECT jsonb_agg(CASE WHEN g->>'name' = $2 AND (g->>'count')::int = $3
                                         THEN jsonb_set(g, '{count}', to_jsonb($4::int))
                                         ELSE g END ORDER BY n)
                   FROM jsonb_array_elements(template->'groups') WITH ORDINALITY AS x(g, n)))
           WHERE id = $1""",
        deployment_id,
        group,
        asked,
        before,
        now,
    )


async def give_away(
    conn: asyncpg.Connection, owner: str, heir: str, now: datetime
) -> tuple[list[uuid.UUID], int]:
    """Transfer ``owner``'s deployments that are not deleted to ``heir`` (their
    Idempotency-Keys stay behind, as an instance's do), unless one is still being decided:
    returns the ids given, and how many are still ``requested`` (then nothing is given)."""
    deciding = await conn.fetchval(
        "SELECT count(*) FROM deployments WHERE owner = $1 AND state = 'requested'", owner
    )
    if deciding:
        return [], deciding
    rows = await conn.fetch(
        """UPDATE deployments SET owner = $2, idempotency_key = NULL, request_digest = NULL,
               updated_at = $3
           WHERE owner = $1 AND state <> 'deleted' RETURNING id""",
        owner,
        heir,
        now,
    )
    return [r["id"] for r in rows], 0
