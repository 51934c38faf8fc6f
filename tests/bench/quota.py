"""Quota decisions per second on a real quota process, against the raw path of one decision.

Two loads: *hot*, one owner asking ``HOT_REQUESTS`` times with room for half of them (every
decision waits on the one owner's usage row), and *spread*, ``SPREAD_USERS`` owners asking
``SPREAD_REQUESTS`` times each with room for ``SPREAD_LIMIT``. The quota process is started once
(migrations, queues, the limits applied from ``quota.limits_set`` events), stopped with SIGTERM,
its queues filled with the launch requests, and started again; so start-up is never timed.

Decisions are counted from the events themselves: probes on ``instance.launch_admitted`` and
``instance.rejected``. The interval runs from the first decision to the last by the envelopes'
``time``, which the quota process stamps as it decides each batch (same machine, same clock):
neither process start-up nor the outbox relay's delay after the last commit is in it; the last
batch's own commit is left out too (one batch of dozens to hundreds). Admissions beyond an owner's
limit are counted from those events and checked against the ``usage`` table.

The ceiling is one decision's raw path done serially on the same broker and database: a bare
aio-pika consume+ack from a quorum queue (the kind quota consumes, with its prefetch) and a bare
transaction locking one row, inserting one and committing; ``1 / (1/a + 1/b)``. Quota decides a
batch per transaction, so it may beat it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import asyncpg

from shared.bus import Bus
from shared.credentials import new_key_text
from shared.db import ensure_database
from shared.events import (
    Envelope,
    Event,
    InstanceLaunchAdmitted,
    InstanceLaunchRequested,
    InstanceRejected,
    QuotaLimitsSet,
    QuotaUsageChanged,
    ResourceLimits,
    ServiceHeartbeat,
    exchange_of,
)
from shared.testing import EventProbe, wait_until
from tests.bench.bus import raw_consume_ack
from tests.system import System

HOT_REQUESTS = 5000
SPREAD_USERS = 1000
SPREAD_REQUESTS = 10
SPREAD_LIMIT = 6
CEILING_N = 2000
PREFETCH = 64  # the services' default (BOREAS_PREFETCH)
PUBLISH_BATCH = 200  # publishes in flight together while filling the queues


def measure_quota(amqp_url: str, database_url: str, logs: Path) -> dict[str, float]:
    """Blocking (runs its own event loop). Starts and stops its own quota process."""
    logs.mkdir(parents=True, exist_ok=True)
    system = System(
        amqp_url,
        database_url,
        logs,
        {"BOREAS_SECRET_KEY": new_key_text(), "BOREAS_LOG_LEVEL": "WARNING"},
    )
    try:
        return asyncio.run(_measure(system))
    finally:
        system.stop()


async def _measure(system: System) -> dict[str, float]:
    payload = Envelope.wrap(_requests({"ceiling": 1}, 1)[0], source="bench").to_bytes()
    consume = await raw_consume_ack(system.amqp_url, CEILING_N, payload, PREFETCH)
    transact = await raw_lock_insert_commit(system.database_url, CEILING_N)
    tag = uuid.uuid4().hex[:6]
    hot = {f"bench-hot-{tag}": HOT_REQUESTS // 2}
    spread = {f"bench-spread-{tag}-{n}": SPREAD_LIMIT for n in range(SPREAD_USERS)}
    await _set_limits(system, hot | spread)
    hot_run = await _decide(system, _requests(hot, HOT_REQUESTS))
    system.kill("quota", 0, signal.SIGTERM)
    spread_run = await _decide(system, _requests(spread, SPREAD_REQUESTS))
    rss = system.replicas["quota"][0].rss_mb()
    system.kill("quota", 0, signal.SIGTERM)
    return {
        "quota_per_s_hot": hot_run.per_s,
        "quota_over_admissions_hot": hot_run.over_admissions(hot),
        "quota_usage_mismatches_hot": await _usage_mismatches(system.database_url, hot_run),
        "quota_per_s_spread": spread_run.per_s,
        "quota_over_admissions_spread": spread_run.over_admissions(spread),
        "quota_usage_mismatches_spread": await _usage_mismatches(system.database_url, spread_run),
        "ceiling_quota_per_s": 1 / (1 / consume + 1 / transact),
        "ceiling_quota_consume_ack_per_s": consume,
        "ceiling_quota_lock_insert_commit_per_s": transact,
        "quota_rss_mb": rss,
    }


# -- the quota process --------------------------------------------------------------------------


async def _start_quota(system: System) -> None:
    """Start the quota process and wait for its first heartbeat: sent once its migrations ran
    and its consumers are attached (its queues declared and bound)."""
    async with EventProbe(system.amqp_url, pattern=ServiceHeartbeat.TOPIC) as beats:
        system.start("quota")
        await beats.wait_for(
            ServiceHeartbeat.TOPIC, lambda e: e.data["service"] == "quota", timeout=60
        )


async def _set_limits(system: System, limits: dict[str, int]) -> None:
    """Declare the queues and apply every owner's instance limit, then stop the process."""
    await _start_quota(system)
    async with _sink(system.amqp_url, QuotaUsageChanged.TOPIC):
        await _publish(
            system.amqp_url,
            (
                QuotaLimitsSet(owner=o, limits=ResourceLimits(instances=n), set_by="bench")
                for o, n in limits.items()
            ),
        )
        conn = await asyncpg.connect(system.database_url)
        try:
            await wait_until(
                lambda: _all_limits_set(conn, list(limits)), timeout=60, what="limits applied"
            )
        finally:
            await conn.close()
        system.kill("quota", 0, signal.SIGTERM)


async def _all_limits_set(conn: asyncpg.Connection, owners: list[str]) -> bool:
    """Every limit applied, and the usage events saying so published: none is left in the
    outbox for the relay to send during a measured run."""
    count = await conn.fetchval("SELECT count(*) FROM quota.limits WHERE owner = ANY($1)", owners)
    return count == len(owners) and not await conn.fetchval("SELECT count(*) FROM quota.outbox")


def _requests(limits: dict[str, int], per_owner: int) -> list[InstanceLaunchRequested]:
    """Each owner's requests, the owners interleaved, as many users asking at once would."""
    return [
        InstanceLaunchRequested(
            instance_id=uuid.uuid4(),
            owner=owner,
            name=f"bench-{n}",
            image="debian-12",
            cpus=1,
            memory_mb=512,
        )
        for n in range(per_owner)
        for owner in limits
    ]


@dataclass
class Run:
    admitted: list[Envelope]
    rejected: list[Envelope]
    per_s: float

    def admitted_by_owner(self) -> Counter[str]:
        return Counter(e.data["owner"] for e in self.admitted)

    def over_admissions(self, limits: dict[str, int]) -> int:
        admitted = self.admitted_by_owner()
        return sum(max(0, admitted[owner] - limit) for owner, limit in limits.items())


async def _decide(system: System, requests: list[InstanceLaunchRequested]) -> Run:
    """Fill the stopped quota's queues with ``requests``, start it again and time its decisions
    (it is left running)."""
    async with (
        EventProbe(system.amqp_url, pattern=InstanceLaunchAdmitted.TOPIC) as admitted,
        EventProbe(system.amqp_url, pattern=InstanceRejected.TOPIC) as rejected,
        _sink(system.amqp_url, QuotaUsageChanged.TOPIC),
    ):
        await _publish(system.amqp_url, requests)
        system.start("quota", index=0)
        wanted = {str(r.instance_id) for r in requests}

        def decided() -> bool:
            seen = {e.data["instance_id"] for e in [*admitted.received, *rejected.received]}
            return wanted <= seen

        await wait_until(decided, timeout=120, interval=0.05, what="every launch decided")
    decisions = _first_of_each([*admitted.received, *rejected.received])
    times = sorted(e.time for e in decisions)
    span = (times[-1] - times[0]).total_seconds()
    return Run(
        _first_of_each(admitted.received),
        _first_of_each(rejected.received),
        (len(decisions) - 1) / span,
    )


def _first_of_each(envelopes: Iterable[Envelope]) -> list[Envelope]:
    """One envelope per instance: the outbox may publish an event twice (at-least-once)."""
    first: dict[str, Envelope] = {}
    for envelope in envelopes:
        first.setdefault(envelope.data["instance_id"], envelope)
    return list(first.values())


async def _usage_mismatches(database_url: str, run: Run) -> int:
    """Owners whose ``usage`` row disagrees with the admissions the events showed."""
    admitted = run.admitted_by_owner()
    owners = sorted({e.data["owner"] for e in [*run.admitted, *run.rejected]})
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT owner, instances FROM quota.usage WHERE owner = ANY($1)", owners
        )
    finally:
        await conn.close()
    usage = {r["owner"]: r["instances"] for r in rows}
    return sum(1 for owner in owners if usage.get(owner, 0) != admitted[owner])


async def _publish(amqp_url: str, events: Iterable[Event]) -> None:
    """Publish with confirms, ``PUBLISH_BATCH`` in flight at a time."""
    bus = Bus(amqp_url, source="boreas/bench")
    await bus.connect()
    try:
        batch: list[Event] = []
        for event in events:
            batch.append(event)
            if len(batch) == PUBLISH_BATCH:
                await asyncio.gather(*(bus.publish(e) for e in batch))
                batch = []
        await asyncio.gather(*(bus.publish(e) for e in batch))
    finally:
        await bus.close()


@contextlib.asynccontextmanager
async def _sink(amqp_url: str, topic: str) -> AsyncIterator[None]:
    """A queue nobody reads, bound to ``topic``: what quota also publishes goes somewhere, as it
    does to the gateway in a deployment (an unroutable event costs the publisher a warning)."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(exchange_of(topic), "topic", durable=True)
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, routing_key=topic)
        yield


# -- the ceiling --------------------------------------------------------------------------------


async def raw_lock_insert_commit(database_url: str, n: int) -> float:
    """Transactions per second that lock one row, insert one row and commit, one after another."""
    await ensure_database(database_url)
    schema = f"bench_quota_ceiling_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(database_url, server_settings={"search_path": schema})
    try:
        await conn.execute(
            f"""CREATE SCHEMA {schema};
                CREATE TABLE usage (owner text PRIMARY KEY, instances int NOT NULL);
                CREATE TABLE ledger (instance_id uuid PRIMARY KEY, owner text NOT NULL);
                INSERT INTO usage VALUES ('ceiling', 0)"""
        )
        ids = [uuid.uuid4() for _ in range(n)]
        began = time.perf_counter()
        for key in ids:
            async with conn.transaction():
                await conn.execute(
                    "SELECT instances FROM usage WHERE owner = $1 FOR UPDATE", "ceiling"
                )
                await conn.execute("INSERT INTO ledger VALUES ($1, $2)", key, "ceiling")
        return n / (time.perf_counter() - began)
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.close()
