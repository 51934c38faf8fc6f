"""SQL over the poller's own schema."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from services.poller.diff import Known
from shared import accounts
from shared.accounts import Account
from shared.events import InstancePlaced

# How long a claimed account waits for its poll to end before another may claim it: a replica
# killed mid-poll leaves its accounts unpolled this long at most.
POLL_CLAIM_SECONDS = 60.0

# The newest revision of an account; a deleted one stays as a tombstone, never claimed.
upsert_account = accounts.upsert_account


@dataclass(frozen=True)
class PolledAccount(Account):
    """An account claimed for a poll, with how its last polls went."""

    failures: int  # polls failed in a row
    health_reported_at: datetime | None


@dataclass(frozen=True)
class Followed(Known):
    """An instance the poller follows, as last seen."""

    expect_change_until: datetime | None  # an action asked for is expected to show until then


@dataclass(frozen=True)
class Moved:
    """An instance whose transition a poll recorded: what its state change event says."""

    instance_id: uuid.UUID
    owner: str
    account_id: str
    provider: str
    provider_instance_id: str
    cpus: int
    memory_mb: int
    old_state: str
    new_state: str
    traceparent: str | None  # of the last request about it (placement, action)


# instance.placed and instance.owner_changed reach the poller on two queues, so an owner change
# may be handled before the placement it follows. The handler of each takes this lock on the
# instance first: whichever comes second then sees what the first committed. An owner change
# finding the instance not yet followed is kept in owner_changes, and following it takes the
# owner from there (and removes the row), so the first state change already names the new owner.
_INSTANCE_LOCK = "SELECT pg_advisory_xact_lock(hashtext('boreas.poller.instance.' || $1))"


async def _lock_instances(conn: asyncpg.Connection, instance_ids: list[str]) -> None:
    # One at a time in id order: two batches locking overlapping sets cannot deadlock.
    for instance_id in sorted(set(instance_ids)):
        await conn.execute(_INSTANCE_LOCK, instance_id)


async def follow(
    conn: asyncpg.Connection, placed: list[InstancePlaced], traceparents: list[str | None]
) -> None:
    """Follow placed instances from now on (pending: their accounts are polled fast), for the
    owner an earlier owner change gave them to, if any, in the trace of their placement."""
    if not placed:
        return
    await _lock_instances(conn, [str(e.instance_id) for e in placed])
    await conn.execute(
        """INSERT INTO instances (instance_id, owner, account_id, provider, provider_instance_id,
                                  cpus, memory_mb, state, traceparent)
           SELECT p.instance_id, coalesce(c.owner, p.owner), p.account_id, p.provider,
                  p.provider_instance_id, p.cpus, p.memory_mb, 'pending', p.traceparent
           FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[],
                       $7::int[], $8::text[])
                AS p(instance_id, owner, account_id, provider, provider_instance_id, cpus,
                     memory_mb, traceparent)
           LEFT JOIN owner_changes c ON c.instance_id = p.instance_id
           ON CONFLICT DO NOTHING""",
        *_columns(placed),
        traceparents,
    )
    await conn.execute(
        "DELETE FROM owner_changes WHERE instance_id = ANY($1::uuid[])",
        [e.instance_id for e in placed],
    )


def _columns(placed: list[InstancePlaced]) -> list[list[object]]:
    """The placements as the columns unnest() takes, one list per field."""
    rows = [
        (
            e.instance_id,
            e.owner,
            e.account_id,
            e.provider,
            e.provider_instance_id,
            e.cpus or 0,
            e.memory_mb or 0,
        )
        for e in placed
    ]
    return [list(column) for column in zip(*rows, strict=True)]


async def change_owner(conn: asyncpg.Connection, instance_id: uuid.UUID, owner: str) -> bool:
    """The instance is ``owner``'s now: its next state changes say so. Returns False when it
    is not followed yet (the change is kept for :func:`follow`)."""
    await _lock_instances(conn, [str(instance_id)])
    followed = await conn.fetchval(
        "UPDATE instances SET owner = $2 WHERE instance_id = $1 RETURNING true",
        instance_id,
        owner,
    )
    if followed:
        return True
    await conn.execute(
        """INSERT INTO owner_changes (instance_id, owner) VALUES ($1, $2)
           ON CONFLICT (instance_id) DO UPDATE SET owner = EXCLUDED.owner, changed_at = now()""",
        instance_id,
        owner,
    )
    return False


async def claim_due_accounts(
    conn: asyncpg.Connection,
    *,
    now: datetime,
    default_interval: float,
    limit: int,
    hold: float = POLL_CLAIM_SECONDS,
) -> list[PolledAccount]:
    """Take the accounts due now and not being polled, atomically: each one's next poll moves
    an interval ahead, and it stays claimed until its poll ends or ``hold`` seconds pass.

    Replicas run this concurrently: ``SKIP LOCKED`` hands each due account to exactly one of
    them, and the claim keeps it from being polled twice at once however slow its list call
    (two polls of a slow cloud would only slow it more). A replica that dies mid-poll leaves
    its claims to expire after ``hold``; one that stops releases them (:func:`release`).
    """
    rows = await conn.fetch(
        """UPDATE accounts a SET next_poll_at = $1 + make_interval(
               secs => coalesce((a.config->>'poll_interval')::float8, $2)),
               polling_until = $1 + make_interval(secs => $4)
           WHERE a.id IN (SELECT id FROM accounts
                          WHERE next_poll_at <= $1 AND NOT deleted
                            AND (polling_until IS NULL OR polling_until <= $1)
                          ORDER BY next_poll_at LIMIT $3 FOR UPDATE SKIP LOCKED)
           RETURNING a.*""",
        now,
        default_interval,
        limit,
        hold,
    )
    return [
        PolledAccount.from_row(
            r, failures=r["failures"], health_reported_at=r["health_reported_at"]
        )
        for r in rows
    ]


async def release(conn: asyncpg.Connection | asyncpg.Pool, account_ids: list[str]) -> None:
    """Polls cut short (the replica is stopping): their accounts are free for another replica
    at once, when they are due."""
    await conn.execute(
        "UPDATE accounts SET polling_until = NULL WHERE id = ANY($1)", sorted(set(account_ids))
    )


async def back_off(
    conn: asyncpg.Connection,
    account_id: str,
    *,
    until: datetime,
    error: str,
    reported_at: datetime,
) -> int | None:
    """A poll failed: the next one waits until ``until``. Returns the account's ``failures``
    (this one counted), its health report marked as sent at ``reported_at``; None if the
    account was deleted meanwhile (nothing to report)."""
    return await conn.fetchval(
        """UPDATE accounts SET failures = failures + 1, next_poll_at = $2, last_error = $3,
               health_reported_at = $4, polling_until = NULL
           WHERE id = $1 AND NOT deleted RETURNING failures""",
        account_id,
        until,
        error,
        reported_at,
    )


async def poke(
    conn: asyncpg.Connection, account_ids: list[str], *, now: datetime, default_interval: float
) -> None:
    """Something changes on these accounts: poll each within its fast interval. Accounts due
    that soon already are left alone (no write, no lock), and the rest are updated in id order,
    so pokes from concurrent transactions never deadlock."""
    await conn.execute(
        """UPDATE accounts a SET next_poll_at = $2::timestamptz + make_interval(
               secs => coalesce((a.config->>'poll_interval')::float8, $3))
           FROM (SELECT id FROM accounts WHERE id = ANY($1) ORDER BY id FOR UPDATE) due
           WHERE a.id = due.id AND a.next_poll_at > $2::timestamptz + make_interval(
               secs => coalesce((a.config->>'poll_interval')::float8, $3))""",
        sorted(set(account_ids)),
        now,
        default_interval,
    )


async def expect_change(
    conn: asyncpg.Connection,
    instance_id: object,
    *,
    until: datetime,
    traceparent: str | None = None,
) -> str | None:
    """An action was asked for: its account is polled fast until its effect shows (or
    ``until``), and the changes seen continue its trace. Returns the instance's account, None
    for an instance not followed."""
    return await conn.fetchval(
        """UPDATE instances SET expect_change_until = $2,
                                traceparent = coalesce($3, traceparent)
           WHERE instance_id = $1 AND state <> 'terminated' RETURNING account_id""",
        instance_id,
        until,
        traceparent,
    )


async def polled(
    conn: asyncpg.Connection | asyncpg.Pool,
    account_id: str,
    *,
    replica: str,
    at: datetime,
    changing: bool,
    fast: float,
    idle: float,
    health_reported: bool = False,
) -> bool:
    """A poll succeeded: record it, and when the next is due: within ``fast`` seconds if the
    poll saw something changing or an instance placed meanwhile is, else ``idle``. With
    ``health_reported``, its health report is marked as sent at ``at``. Returns False if the
    account was deleted meanwhile."""
    return await conn.fetchval(
        """WITH account AS (
               UPDATE accounts SET failures = 0, last_error = NULL, last_poll_at = $3,
                   polling_until = NULL,
                   health_reported_at = CASE WHEN $7 THEN $3 ELSE health_reported_at END,
                   next_poll_at = $3::timestamptz + make_interval(secs => CASE
                       WHEN $4 OR EXISTS (
                           SELECT 1 FROM instances i WHERE i.account_id = $1
                             AND (i.state IN ('pending', 'rebooting', 'terminating')
                                  OR i.expect_change_until > $3))
                       THEN $5::float8 ELSE $6::float8 END)
               WHERE id = $1 AND NOT deleted RETURNING 1),
           logged AS (INSERT INTO polls (account_id, replica, at, ok) VALUES ($1, $2, $3, true))
           SELECT EXISTS (SELECT 1 FROM account)""",
        account_id,
        replica,
        at,
        changing,
        fast,
        idle,
        health_reported,
    )


async def clear_failures(conn: asyncpg.Connection, account_id: str) -> None:
    await conn.execute(
        "UPDATE accounts SET failures = 0, last_error = NULL WHERE id = $1 AND failures > 0",
        account_id,
    )


async def followed(conn: asyncpg.Connection | asyncpg.Pool, account_id: str) -> list[Followed]:
    """The account's instances still alive as last seen (read without locks: a quiet poll
    writes nothing)."""
    rows = await conn.fetch(
        """SELECT instance_id, provider_instance_id, state, expect_change_until
           FROM instances WHERE account_id = $1 AND state <> 'terminated'""",
        account_id,
    )
    return [
        Followed(
            str(r["instance_id"]), r["provider_instance_id"], r["state"], r["expect_change_until"]
        )
        for r in rows
    ]


async def placed_among(
    conn: asyncpg.Connection | asyncpg.Pool, account_id: str, provider_ids: list[str]
) -> dict[str, str]:
    """Which of these nodes Boreas placed (terminated ones included): provider id → instance."""
    rows = await conn.fetch(
        """SELECT provider_instance_id, instance_id FROM instances
           WHERE account_id = $1 AND provider_instance_id = ANY($2)""",
        account_id,
        provider_ids,
    )
    return {r["provider_instance_id"]: str(r["instance_id"]) for r in rows}


async def move_states(
    conn: asyncpg.Connection, moves: list[tuple[str, str, str]], observed_at: datetime
) -> list[Moved]:
    """Record transitions (instance id, old state, new state) unless another poll recorded them
    first: the instances that moved, in one statement."""
    rows = await conn.fetch(
        """UPDATE instances i SET state = m.new, observed_at = $4, expect_change_until = NULL
           FROM unnest($1::uuid[], $2::text[], $3::text[]) AS m(instance_id, old, new)
           WHERE i.instance_id = m.instance_id AND i.state = m.old
           RETURNING i.instance_id, i.owner, i.account_id, i.provider, i.provider_instance_id,
                     i.cpus, i.memory_mb, m.old AS old_state, i.state AS new_state,
                     i.traceparent""",
        [m[0] for m in moves],
        [m[1] for m in moves],
        [m[2] for m in moves],
        observed_at,
    )
    return [Moved(**r) for r in rows]


async def newly_unmanaged(
    conn: asyncpg.Connection, account_id: str, provider_ids: list[str], now: datetime
) -> list[str]:
    rows = await conn.fetch(
        """INSERT INTO unmanaged_nodes (account_id, provider_instance_id, first_seen)
           SELECT $1, unnest($2::text[]), $3 ON CONFLICT DO NOTHING
           RETURNING provider_instance_id""",
        account_id,
        provider_ids,
        now,
    )
    return [r["provider_instance_id"] for r in rows]


async def log_poll(
    conn: asyncpg.Connection, account_id: str, replica: str, at: datetime, ok: bool
) -> None:
    await conn.execute(
        "INSERT INTO polls (account_id, replica, at, ok) VALUES ($1, $2, $3, $4)",
        account_id,
        replica,
        at,
        ok,
    )


async def prune_polls(conn: asyncpg.Connection | asyncpg.Pool, now: datetime) -> None:
    await conn.execute("DELETE FROM polls WHERE at < $1", now - timedelta(days=1))
