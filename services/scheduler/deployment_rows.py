"""SQL over the orchestrator's tables: deployments and their members (migration 0006)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from services.scheduler.orchestration import Member, MemberState
from shared.events import DeploymentMember


@dataclass(frozen=True)
class DeploymentRow:
    id: uuid.UUID
    owner: str
    name: str
    template: dict[str, Any] | None  # None while only a deletion is known
    state: str
    deleting: bool
    reason: str | None
    failed: tuple[uuid.UUID, ...]
    updated_at: datetime


@dataclass(frozen=True)
class MemberRow:
    member: Member
    launch: DeploymentMember


async def lock(conn: asyncpg.Connection, deployment_id: uuid.UUID) -> DeploymentRow | None:
    """The deployment, locked until the transaction ends: its steps are taken one at a time."""
    row = await conn.fetchrow("SELECT * FROM deployments WHERE id = $1 FOR UPDATE", deployment_id)
    if row is None:
        return None
    return DeploymentRow(
        id=row["id"],
        owner=row["owner"],
        name=row["name"],
        template=None if row["template"] is None else json.loads(row["template"]),
        state=row["state"],
        deleting=row["deleting"],
        reason=row["reason"],
        failed=tuple(row["failed"]),
        updated_at=row["updated_at"],
    )


async def ensure(
    conn: asyncpg.Connection,
    deployment_id: uuid.UUID,
    owner: str,
    name: str = "",
    template: dict[str, Any] | None = None,
) -> None:
    """The deployment's row, made if new; a name and template given fill in those not known
    (a deletion may come before the admission)."""
    await conn.execute(
        """INSERT INTO deployments (id, owner, name, template) VALUES ($1, $2, $3, $4)
           ON CONFLICT (id) DO UPDATE SET
               name = CASE WHEN deployments.name = '' THEN EXCLUDED.name
                           ELSE deployments.name END,
               template = coalesce(deployments.template, EXCLUDED.template)""",
        deployment_id,
        owner,
        name,
        None if template is None else json.dumps(template),
    )


async def set_state(
    conn: asyncpg.Connection,
    deployment_id: uuid.UUID,
    state: str,
    reason: str | None,
    failed: Iterable[uuid.UUID],
    at: datetime,
) -> None:
    await conn.execute(
        """UPDATE deployments SET state = $2, reason = $3, failed = $4, updated_at = $5
           WHERE id = $1""",
        deployment_id,
        state,
        reason,
        list(failed),
        at,
    )


async def set_owner(conn: asyncpg.Connection, deployment_id: uuid.UUID, owner: str) -> None:
    """The deployment is ``owner``'s now: its later launches and actions are in their name."""
    await conn.execute("UPDATE deployments SET owner = $2 WHERE id = $1", deployment_id, owner)


async def mark_deleting(conn: asyncpg.Connection, deployment_id: uuid.UUID) -> None:
    await conn.execute("UPDATE deployments SET deleting = true WHERE id = $1", deployment_id)


async def add_members(
    conn: asyncpg.Connection,
    deployment_id: uuid.UUID,
    members: Iterable[DeploymentMember],
    held: Iterable[uuid.UUID],
) -> None:
    """New members, each numbered after the group's last; one known already is left as it is."""
    held = set(held)
    for member in members:
        await conn.execute(
            """INSERT INTO deployment_members
                   (instance_id, deployment_id, group_name, index, launch, held)
               SELECT $1, $2, $3,
                      coalesce((SELECT max(index) + 1 FROM deployment_members
                                WHERE deployment_id = $2 AND group_name = $3), 0),
                      $4, $5
               ON CONFLICT (instance_id) DO NOTHING""",
            member.instance_id,
            deployment_id,
            member.group,
            member.model_dump_json(),
            member.instance_id in held,
        )


async def members(conn: asyncpg.Connection, deployment_id: uuid.UUID) -> list[MemberRow]:
    rows = await conn.fetch(
        """SELECT * FROM deployment_members WHERE deployment_id = $1
           ORDER BY group_name, index""",
        deployment_id,
    )
    return [MemberRow(_member(r), DeploymentMember.model_validate_json(r["launch"])) for r in rows]


def _member(r: asyncpg.Record) -> Member:
    return Member(
        r["instance_id"],
        r["group_name"],
        MemberState(r["state"]),
        r["failure"],
        held=r["held"],
        removed=r["removed"],
    )


async def deployment_of(conn: asyncpg.Connection, instance_id: uuid.UUID) -> uuid.UUID | None:
    """The deployment the instance is a member of, if any."""
    return await conn.fetchval(
        "SELECT deployment_id FROM deployment_members WHERE instance_id = $1", instance_id
    )


async def member(conn: asyncpg.Connection, instance_id: uuid.UUID) -> Member | None:
    r = await conn.fetchrow("SELECT * FROM deployment_members WHERE instance_id = $1", instance_id)
    return None if r is None else _member(r)


async def set_member(
    conn: asyncpg.Connection,
    instance_ids: Iterable[uuid.UUID],
    state: MemberState,
    failure: str | None = None,
) -> None:
    """Move members to ``state``; a failure given is kept (one known already stays)."""
    await conn.execute(
        """UPDATE deployment_members SET state = $2, failure = coalesce(failure, $3),
               updated_at = now()
           WHERE instance_id = ANY($1)""",
        list(instance_ids),
        state.value,
        failure,
    )


async def unhold(conn: asyncpg.Connection, instance_id: uuid.UUID) -> None:
    await conn.execute(
        "UPDATE deployment_members SET held = false, updated_at = now() WHERE instance_id = $1",
        instance_id,
    )


_GONE = [MemberState.TERMINATED.value, MemberState.CANCELLED.value]


async def remove_beyond(
    conn: asyncpg.Connection, deployment_id: uuid.UUID, group: str, count: int
) -> None:
    """Scaling down to ``count``: the group's newest members beyond it are removed."""
    await conn.execute(
        """UPDATE deployment_members SET removed = true, updated_at = now()
           WHERE instance_id IN (
               SELECT instance_id FROM deployment_members
               WHERE deployment_id = $1 AND group_name = $2 AND NOT removed
                 AND state <> ALL($4)
               ORDER BY index DESC
               OFFSET 0 LIMIT greatest(0, (SELECT count(*) FROM deployment_members
                                           WHERE deployment_id = $1 AND group_name = $2
                                             AND NOT removed AND state <> ALL($4)) - $3))""",
        deployment_id,
        group,
        count,
        _GONE,
    )


async def cancel_placement(conn: asyncpg.Connection, instance_id: uuid.UUID, owner: str) -> None:
    """A member that will never launch: a launch of it arriving late is not recorded
    (repository.add_launch skips an instance with a placement)."""
    await conn.execute(
        """INSERT INTO placements (instance_id, owner, status) VALUES ($1, $2, 'cancelled')
           ON CONFLICT (instance_id) DO NOTHING""",
        instance_id,
        owner,
    )


async def keep_early_answer(
    conn: asyncpg.Connection, instance_id: uuid.UUID, denial: str | None
) -> None:
    """An approval answer for an instance not (yet) known as a member (``denial``: None if
    approved)."""
    await conn.execute(
        """INSERT INTO early_answers (instance_id, approved, denial) VALUES ($1, $2, $3)
           ON CONFLICT (instance_id) DO NOTHING""",
        instance_id,
        denial is None,
        denial,
    )


async def apply_early_answers(conn: asyncpg.Connection, deployment_id: uuid.UUID) -> None:
    """Answers seen before the deployment's members were: a held member approved is unheld,
    one denied is denied."""
    answers = await conn.fetch(
        """DELETE FROM early_answers a USING deployment_members m
           WHERE m.instance_id = a.instance_id AND m.deployment_id = $1
           RETURNING a.instance_id, a.approved, a.denial""",
        deployment_id,
    )
    for answer in answers:
        if answer["approved"]:
            await unhold(conn, answer["instance_id"])
        else:
            await conn.execute(
                """UPDATE deployment_members SET state = $2, failure = $3, updated_at = now()
                   WHERE instance_id = $1 AND state = 'waiting'""",
                answer["instance_id"],
                MemberState.DENIED.value,
                answer["denial"],
            )


async def prune_early_answers(pool: asyncpg.Pool, before: datetime) -> None:
    await pool.execute("DELETE FROM early_answers WHERE seen_at < $1", before)
