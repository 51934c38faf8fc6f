"""Order where it matters, concurrency where it does not: across two replicas of one service, each
key's messages are handled one after another in publish order, while different keys overlap.

Overlap and order are measured from what the handlers recorded (when each message started and
ended, on which replica), not asserted from elapsed times.
"""

from __future__ import annotations

import itertools
import time
import uuid
from dataclasses import dataclass

from shared.balancer import owner_of
from shared.consumer import Subscription, UnitOfWork
from shared.events import InstanceRejected
from shared.ordering import OrderKey, partition_of
from shared.runtime import ServiceRuntime
from shared.testing import wait_until
from tests.integration.support import settings_for, throwaway_runtime

PARTITIONS = 4
KEYS_PER_PARTITION = 2
PER_KEY = 10
WORK = 0.02  # seconds of pg_sleep per message: long enough for handlers to overlap


@dataclass(frozen=True)
class Handled:
    key: str
    seq: int
    replica: str
    started: float
    ended: float


def keys_covering_every_partition() -> list[str]:
    """Owners spread so that every partition has messages."""
    found: dict[int, list[str]] = {p: [] for p in range(PARTITIONS)}
    for n in itertools.count():
        key = f"owner-{n}"
        bucket = found[partition_of(OrderKey.OWNER, key, PARTITIONS)]
        if len(bucket) < KEYS_PER_PARTITION:
            bucket.append(key)
        if all(len(b) == KEYS_PER_PARTITION for b in found.values()):
            return [k for b in found.values() for k in b]
    raise AssertionError("unreachable")


def replicas_sharing(queue: str) -> tuple[str, str]:
    """Two replica names that each own some partitions of ``queue`` (rendezvous hashing)."""
    for n in itertools.count():
        a, b = f"replica-a{n}", f"replica-b{n}"
        owners = {owner_of(f"{queue}.{p}", [a, b]) for p in range(PARTITIONS)}
        if owners == {a, b}:
            return a, b
    raise AssertionError("unreachable")


def recorder(replica: str, log: list[Handled]):
    async def handle(event: InstanceRejected, uow: UnitOfWork) -> None:
        started = time.monotonic()
        await uow.conn.execute("SELECT pg_sleep($1)", WORK)  # the handler's work
        key, seq = event.reason.rsplit(":", 1)
        log.append(Handled(key, int(seq), replica, started, time.monotonic()))

    return handle


def replica_runtime(
    name: str, replica: str, amqp_url: str, database_url: str, log: list[Handled]
) -> ServiceRuntime:
    settings = settings_for(
        amqp_url,
        database_url,
        replica_id=replica,
        partitions=PARTITIONS,
        consumer_concurrency=4,
        consumer_batch=1,
    )
    return throwaway_runtime(
        name,
        settings,
        [
            Subscription(
                InstanceRejected, recorder(replica, log), name="ordered", order_by=OrderKey.OWNER
            )
        ],
    )


def overlapping_pairs(handled: list[Handled]) -> int:
    """Pairs of messages of different keys that were being handled at the same moment."""
    return sum(
        1
        for x, y in itertools.combinations(handled, 2)
        if x.key != y.key and x.started < y.ended and y.started < x.ended
    )


async def test_one_keys_messages_keep_their_order_across_two_replicas_while_keys_overlap(
    amqp_url: str, database_url: str, unique: str
) -> None:
    name = f"ord_{unique}"
    first, second = replicas_sharing(f"{name}.ordered")
    keys = keys_covering_every_partition()
    handled: list[Handled] = []
    a = replica_runtime(name, first, amqp_url, database_url, handled)
    b = replica_runtime(name, second, amqp_url, database_url, handled)
    # A starts alone and becomes the active consumer of every partition; B joins; the
    # partitions B owns move to it while messages flow.
    async with a, b:
        sent = 0

        async def publish_round() -> None:
            nonlocal sent
            for key in keys:
                await a.bus.publish(
                    InstanceRejected(instance_id=uuid.uuid4(), owner=key, reason=f"{key}:{sent}")
                )
            sent += 1

        async def both_replicas_handle() -> bool:
            await publish_round()
            recent = {h.replica for h in handled if h.seq >= sent - 3}
            return recent == {first, second}

        await wait_until(both_replicas_handle, timeout=60, interval=0.3, what="both replicas")
        for _ in range(PER_KEY):
            await publish_round()
        await wait_until(
            lambda: len(handled) >= sent * len(keys), timeout=60, what="every message handled"
        )

    assert len(handled) == sent * len(keys), "each message handled once, by one replica"
    for key in keys:
        mine = sorted((h for h in handled if h.key == key), key=lambda h: h.started)
        assert [h.seq for h in mine] == list(range(sent)), f"{key} out of order"
        for before, after in itertools.pairwise(mine):
            assert before.ended <= after.started, f"{key}: two of its messages at once"
    assert {h.replica for h in handled} == {first, second}
    assert overlapping_pairs(handled) > 0, "different keys were handled at the same time"
