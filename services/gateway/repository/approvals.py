"""Approval rules, and the launches held for approval whose time is up."""

from __future__ import annotations

import json
import uuid
from datetime import datetime

import asyncpg

from services.gateway.leases import NO_POLICY
from services.gateway.schemas import ApprovalRule, LeasePolicy


async def rules(conn: asyncpg.Connection | asyncpg.Pool) -> list[ApprovalRule]:
    rows = await conn.fetch("SELECT name, conditions FROM approval_rules ORDER BY position")
    return [_rule(row["name"], row["conditions"]) for row in rows]


def _rule(name: str, conditions: str) -> ApprovalRule:
    return ApprovalRule(name=name, when=json.loads(conditions))


async def replace_rules(conn: asyncpg.Connection, new: list[ApprovalRule]) -> None:
    """Every rule at once (in the caller's transaction)."""
    await conn.execute("DELETE FROM approval_rules")
    await conn.executemany(
        "INSERT INTO approval_rules (position, name, conditions) VALUES ($1, $2, $3)",
        [
            (position, rule.name, rule.when.model_dump_json(exclude_none=True))
            for position, rule in enumerate(new)
        ],
    )


async def launch_terms(
    conn: asyncpg.Connection, username: str
) -> tuple[LeasePolicy, list[ApprovalRule]]:
    """What governs a launch of ``username``: their lease policy and the approval rules, in one
    round trip."""
    row = await conn.fetchrow(
        """SELECT (SELECT row_to_json(p) FROM (
                       SELECT default_seconds, max_seconds, on_expiry, warn_seconds
                       FROM lease_policies WHERE username = $1) p) AS policy,
                  (SELECT coalesce(json_agg(json_build_object('name', name, 'when', conditions)
                                            ORDER BY position), '[]')
                   FROM approval_rules) AS rules""",
        username,
    )
    policy = NO_POLICY if row["policy"] is None else LeasePolicy(**json.loads(row["policy"]))
    return policy, [ApprovalRule(**rule) for rule in json.loads(row["rules"])]


async def claim_overdue(conn: asyncpg.Connection, now: datetime, limit: int) -> list[uuid.UUID]:
    """Held launches whose deadline has passed, locked; those another replica holds are left to
    it."""
    rows = await conn.fetch(
        """SELECT id FROM instances
           WHERE state = 'awaiting_approval' AND approval_deadline <= $1
           ORDER BY approval_deadline LIMIT $2
           FOR UPDATE SKIP LOCKED""",
        now,
        limit,
    )
    return [row["id"] for row in rows]
