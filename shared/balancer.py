"""Sharing partitions among a service's replicas.

Each partition queue of an ordered handler has a single active consumer: the replica that
registered first. Left alone, the first replica to start would handle every partition and the
others would only stand by. So every replica registers on every partition (for instant
failover), and each partition has an *owner*: the live replica that wins rendezvous hashing
over the partition's name. A replica that finds itself active on a partition it does not own
hands it over (:meth:`shared.consumer.ConsumerRunner.hand_over`): it finishes what it started,
closes that partition's channel, so the broker returns what it held and activates the next
replica in line, and registers again at the back. Ownership only steers the load: order never
depends on it, since the broker never has two active consumers on one partition.

A replica is live while its row in ``replicas`` is fresher than three balancing intervals.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable
from datetime import timedelta

import asyncpg
import structlog

from shared.consumer import ConsumerRunner

log = structlog.get_logger(__name__)

LIVE_AFTER_MISSED = 3


def owner_of(partition: str, replicas: Iterable[str]) -> str:
    """Rendezvous hashing: every replica computes the same owner from the same live set, and a
    replica joining or leaving moves only the partitions it wins or held."""
    return max(replicas, key=lambda r: hashlib.sha256(f"{r}|{partition}".encode()).digest())


async def balance_forever(
    pool: asyncpg.Pool,
    consumers: ConsumerRunner,
    *,
    replica: str,
    interval: float,
    clock,
) -> None:
    try:
        while True:
            now = clock()
            await pool.execute(
                """INSERT INTO replicas (replica, last_seen) VALUES ($1, $2)
                   ON CONFLICT (replica) DO UPDATE SET last_seen = EXCLUDED.last_seen""",
                replica,
                now,
            )
            live = [
                r["replica"]
                for r in await pool.fetch(
                    "SELECT replica FROM replicas WHERE last_seen > $1",
                    now - timedelta(seconds=LIVE_AFTER_MISSED * interval),
                )
            ]
            await hand_over_foreign(consumers, replica, live)
            await asyncio.sleep(interval)
    finally:
        # Leaving: let the others take our share at once rather than after our row goes stale.
        try:
            async with asyncio.timeout(2):
                await pool.execute("DELETE FROM replicas WHERE replica = $1", replica)
        except Exception as exc:
            log.debug("replica_row_left", error=repr(exc))


async def hand_over_foreign(consumers: ConsumerRunner, replica: str, live: list[str]) -> None:
    """Hand over each partition this replica is active on but does not own."""
    if replica not in live:
        live = [*live, replica]
    for consumer in consumers.consumers:
        for source in consumer.sources:
            if source.partition is None:
                continue
            active, source.received = source.received, False
            if active and owner_of(source.queue_name, live) != replica:
                await consumers.hand_over(consumer, source)
