"""SQL over the scheduler's own schema: accounts, placements, the calls owed to clouds and
leases."""

from __future__ import annotations

import dataclasses
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from services.scheduler.leases import DueLease
from services.scheduler.placement import GrantedAccount, Request
from shared import accounts, tracing
from shared.events import Lease, ProviderAccountChanged


async def upsert_account(conn: asyncpg.Connection, event: ProviderAccountChanged) -> None:
    """The newest revision, with whom it is granted to (:func:`shared.accounts.upsert_account`)."""
    await accounts.upsert_account(conn, event, grants=event.grants)


async def all_accounts(conn: asyncpg.Connection | asyncpg.Pool) -> list[GrantedAccount]:
    """The accounts placement may use and actions may reach (deleted ones are not)."""
    rows = await conn.fetch("SELECT * FROM accounts WHERE NOT deleted ORDER BY name")
    return [GrantedAccount.from_row(r, grants=frozenset(r["grants"])) for r in rows]


async def loads(conn: asyncpg.Connection | asyncpg.Pool, account_ids: list[str]) -> dict[str, int]:
    rows = await conn.fetch("SELECT id, load FROM accounts WHERE id = ANY($1)", account_ids)
    return {r["id"]: r["load"] for r in rows}


async def lock_instance(conn: asyncpg.Connection, instance_id: uuid.UUID) -> None:
    """Until the transaction ends: launch and action handlers of one instance run on different
    queues, and this serialises them."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtext('boreas.scheduler.' || $1))", str(instance_id)
    )


@dataclass(frozen=True)
class InstancePlacement:
    """What the scheduler did with a launch: where it is (``launching``, ``placed``, ``ended``)
    or why it is not (``failed``, ``cancelled``)."""

    instance_id: uuid.UUID
    owner: str
    status: str
    account_id: str | None = None
    provider_instance_id: str | None = None

    @property
    def on_a_cloud(self) -> bool:
        return self.status in ("placed", "launching")


_PLACEMENT = "SELECT instance_id, owner, status, account_id, provider_instance_id FROM placements"


async def placement(conn: asyncpg.Connection, instance_id: uuid.UUID) -> InstancePlacement | None:
    row = await conn.fetchrow(f"{_PLACEMENT} WHERE instance_id = $1 FOR UPDATE", instance_id)
    return None if row is None else InstancePlacement(**row)


async def current_placement(pool: asyncpg.Pool, instance_id: uuid.UUID) -> InstancePlacement | None:
    """The instance's placement as it is now, unlocked (for a cloud call made outside any
    transaction)."""
    row = await pool.fetchrow(f"{_PLACEMENT} WHERE instance_id = $1", instance_id)
    return None if row is None else InstancePlacement(**row)


async def record(conn: asyncpg.Connection, placement: InstancePlacement) -> None:
    """Record the placement; one recorded already keeps its owner, and its account and
    provider id unless this one names them."""
    await conn.execute(
        """INSERT INTO placements (instance_id, owner, status, account_id, provider_instance_id)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (instance_id) DO UPDATE SET status = EXCLUDED.status,
               account_id = coalesce(EXCLUDED.account_id, placements.account_id),
               provider_instance_id = coalesce(EXCLUDED.provider_instance_id,
                                               placements.provider_instance_id),
               updated_at = now()""",
        placement.instance_id,
        placement.owner,
        placement.status,
        placement.account_id,
        placement.provider_instance_id,
    )


async def end_placement(conn: asyncpg.Connection, instance_id: uuid.UUID) -> bool:
    """A placed instance has terminated: it counts no more on its account, and holds its
    group's spread place no more."""
    await conn.execute("DELETE FROM spread_claims WHERE instance_id = $1", instance_id)
    account_id = await conn.fetchval(
        """UPDATE placements SET status = 'ended', updated_at = now()
           WHERE instance_id = $1 AND status = 'placed' RETURNING account_id""",
        instance_id,
    )
    if account_id is None:
        return False
    await conn.execute("UPDATE accounts SET load = load - 1 WHERE id = $1", account_id)
    return True


async def change_owner(conn: asyncpg.Connection, instance_id: uuid.UUID, owner: str) -> None:
    """The instance is ``owner``'s now: its placement, and the calls not yet made for it, so
    what they publish later names the new owner (calls made are history, left as they were)."""
    await conn.execute(
        """UPDATE placements SET owner = $2, updated_at = now()
           WHERE instance_id = $1 AND owner <> $2""",
        instance_id,
        owner,
    )
    await conn.execute(
        """UPDATE cloud_calls SET owner = $2, updated_at = now()
           WHERE instance_id = $1 AND status = 'pending' AND owner <> $2""",
        instance_id,
        owner,
    )
    await conn.execute(
        "UPDATE leases SET owner = $2, updated_at = now() WHERE instance_id = $1 AND owner <> $2",
        instance_id,
        owner,
    )


# -- calls owed to clouds ---------------------------------------------------------------------


@dataclass(frozen=True)
class CloudCall:
    id: int
    instance_id: uuid.UUID
    owner: str
    action: str
    request: dict[str, Any]  # a launch's (see launch); an action's is empty
    attempts: int  # times taken, this one included
    tried: tuple[str, ...]  # accounts a create was sent to, earlier takes included
    traceparent: str | None = None  # of the span that recorded it (shared.tracing)
    created_at: datetime | None = None  # when it was recorded (a launch: its admission)

    @property
    def launch(self) -> Request:
        """What a launch asks, for the owner the call names now."""
        return Request(owner=self.owner, **self.request)


def _call(row: asyncpg.Record) -> CloudCall:
    return CloudCall(
        row["id"],
        row["instance_id"],
        row["owner"],
        row["action"],
        json.loads(row["request"]),
        row["attempts"],
        tuple(row["tried"]),
        row["traceparent"],
        row["created_at"],
    )


async def add_call(
    conn: asyncpg.Connection, instance_id: uuid.UUID, *, owner: str, action: str
) -> None:
    """Record an action (stop, start, reboot, terminate) owed to the instance's cloud."""
    await conn.execute(
        """INSERT INTO cloud_calls (instance_id, owner, action, request, traceparent)
           VALUES ($1, $2, $3, '{}', $4)""",
        instance_id,
        owner,
        action,
        tracing.current_traceparent(),
    )


def _launch_json(request: Request) -> str:
    fields = dataclasses.asdict(request)
    del fields["owner"]  # a column of its own, which an owner change updates
    return json.dumps(fields)


async def add_launch(conn: asyncpg.Connection, instance_id: uuid.UUID, request: Request) -> None:
    """Record a launch unless it was recorded, placed, failed or cancelled already."""
    await conn.execute(
        """INSERT INTO cloud_calls (instance_id, owner, action, request, traceparent)
           SELECT $1, $2, 'launch', $3, $4
           WHERE NOT EXISTS (SELECT 1 FROM placements WHERE instance_id = $1)
             AND NOT EXISTS (SELECT 1 FROM cloud_calls
                             WHERE instance_id = $1 AND action = 'launch')""",
        instance_id,
        request.owner,
        _launch_json(request),
        tracing.current_traceparent(),
    )


@dataclass(frozen=True)
class PendingLaunch:
    id: int  # the call's
    untouched: bool  # no create was sent for it and no worker holds it now


async def pending_launch(conn: asyncpg.Connection, instance_id: uuid.UUID) -> PendingLaunch | None:
    """The instance's launch not yet done, locked; cancelling an ``untouched`` one leaves
    nothing on any cloud."""
    row = await conn.fetchrow(
        """SELECT id, tried = '{}' AND (lease_until IS NULL OR lease_until < now()) AS untouched
           FROM cloud_calls
           WHERE instance_id = $1 AND action = 'launch' AND status = 'pending' FOR UPDATE""",
        instance_id,
    )
    return None if row is None else PendingLaunch(**row)


async def cancel_call(conn: asyncpg.Connection, call_id: int) -> None:
    await conn.execute(
        "UPDATE cloud_calls SET status = 'cancelled', updated_at = now() WHERE id = $1", call_id
    )


async def claim_calls(
    pool: asyncpg.Pool, *, now: datetime, limit: int, lease: timedelta
) -> list[CloudCall]:
    """Lease up to ``limit`` due calls, each the oldest pending call of its instance (so an
    instance's calls are made in the order they were asked for). ``SKIP LOCKED`` shares them
    among replicas; the lease keeps a call from being taken twice until it runs out."""
    rows = await pool.fetch(
        """UPDATE cloud_calls c SET attempts = attempts + 1, lease_until = $1 + $3::interval,
               updated_at = $1
           WHERE c.id IN (
               SELECT id FROM cloud_calls d
               WHERE status = 'pending' AND not_before <= $1
                 AND (lease_until IS NULL OR lease_until < $1)
                 AND NOT EXISTS (SELECT 1 FROM cloud_calls e
                                 WHERE e.instance_id = d.instance_id AND e.status = 'pending'
                                   AND e.id < d.id)
               ORDER BY not_before, id LIMIT $2 FOR UPDATE SKIP LOCKED)
           RETURNING *""",
        now,
        limit,
        lease,
    )
    return sorted((_call(r) for r in rows), key=lambda c: c.id)


async def renew_leases(pool: asyncpg.Pool, call_ids: list[int], until: datetime) -> None:
    if call_ids:
        await pool.execute(
            """UPDATE cloud_calls SET lease_until = $2
               WHERE id = ANY($1) AND status = 'pending'""",
            call_ids,
            until,
        )


class _NoClaim(Exception):
    """The place a spread launch needs is another member's: undo the room reserved."""


NO_ROOM = "no headroom left"
PLACE_TAKEN = "place taken"


async def reserve(
    pool: asyncpg.Pool,
    call: CloudCall,
    account_id: str,
    max_instances: int | None,
    place: str | None = None,
) -> str | None:
    """Before a create: room on the account (:data:`NO_ROOM` if it has none left), the
    placement marked launching there, and the account noted on the call, so a retry after a
    crash knows where a node may already be. A spread launch (``place``: the account or region
    it takes for its group) also claims its place, or reserves nothing (:data:`PLACE_TAKEN`)
    when another member holds it; the claim's key makes two launches racing for one place take
    it once. All of it or none; None once reserved."""
    try:
        async with pool.acquire() as conn, conn.transaction():
            if not await _room(conn, call, account_id, max_instances):
                return NO_ROOM
            if place is not None and not await _claim(conn, call, place):
                raise _NoClaim
    except _NoClaim:
        return PLACE_TAKEN
    return None


async def _room(
    conn: asyncpg.Connection, call: CloudCall, account_id: str, max_instances: int | None
) -> bool:
    return await conn.fetchval(
        """WITH room AS (
               UPDATE accounts SET load = load + 1
               WHERE id = $2 AND ($3::int IS NULL OR load < $3) RETURNING id),
           launching AS (
               INSERT INTO placements (instance_id, owner, status, account_id)
               SELECT $4, $5, 'launching', id FROM room
               ON CONFLICT (instance_id) DO UPDATE SET status = 'launching',
                   account_id = EXCLUDED.account_id, updated_at = now()
               RETURNING 1),
           noted AS (
               UPDATE cloud_calls SET tried = CASE WHEN $2 = ANY(tried) THEN tried
                                                   ELSE array_append(tried, $2) END
               WHERE id = $1 AND EXISTS (SELECT 1 FROM room) RETURNING 1)
           SELECT EXISTS (SELECT 1 FROM room)""",
        call.id,
        account_id,
        max_instances,
        call.instance_id,
        call.owner,
    )


async def _claim(conn: asyncpg.Connection, call: CloudCall, place: str) -> bool:
    """Claim ``place`` for the launch's deployment group (kept if this instance holds it)."""
    request = call.launch
    claimed = await conn.fetchval(
        """INSERT INTO spread_claims (deployment_id, group_name, place, instance_id)
           VALUES ($1, $2, $3, $4)
           ON CONFLICT (deployment_id, group_name, place) DO UPDATE
               SET instance_id = EXCLUDED.instance_id
               WHERE spread_claims.instance_id = EXCLUDED.instance_id
           RETURNING true""",
        uuid.UUID(request.deployment_id or ""),
        request.group,
        place,
        call.instance_id,
    )
    return bool(claimed)


async def spread_taken(
    pool: asyncpg.Pool, deployment_id: str, group: str, instance_id: uuid.UUID
) -> frozenset[str]:
    """The places (accounts or regions) other members of the group hold or are launching on."""
    rows = await pool.fetch(
        """SELECT place FROM spread_claims
           WHERE deployment_id = $1 AND group_name = $2 AND instance_id <> $3""",
        uuid.UUID(deployment_id),
        group,
        instance_id,
    )
    return frozenset(r["place"] for r in rows)


async def release(pool: asyncpg.Pool, call: CloudCall, account_id: str) -> None:
    """The create failed: give the room back, and the spread claim with it."""
    async with pool.acquire() as conn, conn.transaction():
        released = await conn.fetchval(
            """DELETE FROM placements WHERE instance_id = $1 AND status = 'launching'
               RETURNING true""",
            call.instance_id,
        )
        if released:
            await conn.execute("UPDATE accounts SET load = load - 1 WHERE id = $1", account_id)
        await conn.execute("DELETE FROM spread_claims WHERE instance_id = $1", call.instance_id)


async def adopt(conn: asyncpg.Connection, call: CloudCall, account_id: str) -> None:
    """A node found by its tag after a crash: count it on its account like a fresh create."""
    held = await conn.fetchval(
        "SELECT account_id FROM placements WHERE instance_id = $1 AND status = 'launching'",
        call.instance_id,
    )
    if held == account_id:
        return
    if held is not None:
        await conn.execute("UPDATE accounts SET load = load - 1 WHERE id = $1", held)
    await conn.execute("UPDATE accounts SET load = load + 1 WHERE id = $1", account_id)


async def record_placed(
    conn: asyncpg.Connection,
    call: CloudCall,
    account_id: str,
    provider_instance_id: str,
) -> None:
    """The cloud has the node: the placement, and the call done, in one statement."""
    await conn.execute(
        """WITH done AS (
               UPDATE cloud_calls SET status = 'done', lease_until = NULL, updated_at = now()
               WHERE id = $1)
           INSERT INTO placements (instance_id, owner, status, account_id, provider_instance_id)
           VALUES ($2, $3, 'placed', $4, $5)
           ON CONFLICT (instance_id) DO UPDATE SET status = 'placed',
               account_id = EXCLUDED.account_id,
               provider_instance_id = EXCLUDED.provider_instance_id, updated_at = now()""",
        call.id,
        call.instance_id,
        call.owner,
        account_id,
        provider_instance_id,
    )


async def finish_call(conn: asyncpg.Connection | asyncpg.Pool, call_id: int, status: str) -> None:
    await conn.execute(
        """UPDATE cloud_calls SET status = $2, lease_until = NULL, updated_at = now()
           WHERE id = $1""",
        call_id,
        status,
    )


async def postpone(pool: asyncpg.Pool, call_id: int, until: datetime) -> None:
    """Try again later (the clouds throttled it): not a failure, and not an attempt."""
    await pool.execute(
        """UPDATE cloud_calls SET not_before = $2, lease_until = NULL, updated_at = now()
           WHERE id = $1""",
        call_id,
        until,
    )


async def repair_loads(pool: asyncpg.Pool) -> int:
    """Recount every account's load from its placements; returns how many were wrong."""
    status = await pool.execute(
        """UPDATE accounts a SET load = c.n
           FROM (SELECT a2.id, count(p.instance_id) AS n FROM accounts a2
                 LEFT JOIN placements p ON p.account_id = a2.id
                      AND p.status IN ('launching', 'placed')
                 GROUP BY a2.id) c
           WHERE c.id = a.id AND a.load <> c.n"""
    )
    return int(status.split()[-1])


async def prune_calls(pool: asyncpg.Pool, before: datetime) -> None:
    await pool.execute(
        "DELETE FROM cloud_calls WHERE status <> 'pending' AND updated_at < $1", before
    )


# -- leases -----------------------------------------------------------------------------------


async def add_lease(
    conn: asyncpg.Connection, instance_id: uuid.UUID, owner: str, lease: Lease
) -> None:
    """The lease the launch was admitted with, first due at its warning. Kept once (a launch
    admitted again changes nothing); an extension that came first keeps its later expiry; a
    lease ended already (the instance terminated before its launch came) stays ended."""
    await conn.execute(
        """INSERT INTO leases (instance_id, owner, expires_at, on_expiry, warn_seconds, due_at)
           VALUES ($1, $2, $3::timestamptz, $4, $5::int,
                   $3::timestamptz - $5::int * interval '1 second')
           ON CONFLICT (instance_id) DO UPDATE SET
               on_expiry = EXCLUDED.on_expiry, warn_seconds = EXCLUDED.warn_seconds,
               expires_at = greatest(leases.expires_at, EXCLUDED.expires_at),
               due_at = greatest(leases.expires_at, EXCLUDED.expires_at)
                        - EXCLUDED.warn_seconds * interval '1 second',
               updated_at = now()
           WHERE leases.on_expiry IS NULL AND NOT leases.ended""",
        instance_id,
        owner,
        lease.expires_at,
        lease.on_expiry,
        lease.warn_seconds,
    )


async def extend_lease(
    conn: asyncpg.Connection, instance_id: uuid.UUID, owner: str, expires_at: datetime
) -> bool:
    """Move the lease to a later ``expires_at``, warning and expiry armed again (also after it
    expired). An extension that comes before the launch is kept for it; an earlier or equal
    expiry (a copy, or one overtaken) and an ended lease change nothing. True if it moved."""
    moved = await conn.fetchval(
        """INSERT INTO leases (instance_id, owner, expires_at) VALUES ($1, $2, $3)
           ON CONFLICT (instance_id) DO UPDATE SET
               expires_at = EXCLUDED.expires_at, warned = false,
               due_at = EXCLUDED.expires_at - leases.warn_seconds * interval '1 second',
               updated_at = now()
           WHERE NOT leases.ended
             AND (leases.expires_at IS NULL OR leases.expires_at < EXCLUDED.expires_at)
           RETURNING true""",
        instance_id,
        owner,
        expires_at,
    )
    return bool(moved)


async def end_lease(conn: asyncpg.Connection, instance_id: uuid.UUID, owner: str) -> None:
    """The instance terminated or failed: nothing more is due for it, whatever comes later."""
    await conn.execute(
        """INSERT INTO leases (instance_id, owner, ended) VALUES ($1, $2, true)
           ON CONFLICT (instance_id) DO UPDATE SET ended = true, due_at = NULL,
               updated_at = now()
           WHERE NOT leases.ended""",
        instance_id,
        owner,
    )


async def note_state(
    conn: asyncpg.Connection, instance_id: uuid.UUID, state: str, seen_at: datetime
) -> None:
    """The instance's state as last seen (an older sighting delivered late is ignored)."""
    await conn.execute(
        """UPDATE leases SET state = $2, state_seen_at = $3
           WHERE instance_id = $1 AND (state_seen_at IS NULL OR state_seen_at <= $3)""",
        instance_id,
        state,
        seen_at,
    )


async def claim_due_leases(conn: asyncpg.Connection, now: datetime, limit: int) -> list[DueLease]:
    """Up to ``limit`` leases due by ``now``, locked until the transaction ends; another
    replica skips them (and, once moved on, no longer finds them due)."""
    rows = await conn.fetch(
        """SELECT l.instance_id, l.owner, l.expires_at, l.on_expiry, l.warn_seconds, l.warned,
                  l.state, p.account_id, p.provider_instance_id
           FROM leases l LEFT JOIN placements p USING (instance_id)
           WHERE l.due_at IS NOT NULL AND l.due_at <= $1
           ORDER BY l.due_at LIMIT $2
           FOR UPDATE OF l SKIP LOCKED""",
        now,
        limit,
    )
    return [DueLease(**r) for r in rows]


async def move_lease(
    conn: asyncpg.Connection, instance_id: uuid.UUID, *, warned: bool, due_at: datetime | None
) -> None:
    await conn.execute(
        "UPDATE leases SET warned = $2, due_at = $3, updated_at = now() WHERE instance_id = $1",
        instance_id,
        warned,
        due_at,
    )


async def prune_leases(pool: asyncpg.Pool, before: datetime) -> None:
    await pool.execute("DELETE FROM leases WHERE ended AND updated_at < $1", before)
