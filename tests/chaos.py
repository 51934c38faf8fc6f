"""The fault suite: under a steady launch load, restart RabbitMQ, restart PostgreSQL, and kill -9
one replica of each service (starting it again); then check that nothing was lost.

    python -m tests.chaos [--rate 10] [--rounds 1]      (make chaos: a longer run)

Afterwards, every accepted launch must have settled (running, rejected, failed or terminated);
an external subscriber (its own durable queue on ``boreas.events``) must have seen every state
change the poller recorded, exactly once after deduplicating on the CloudEvent id; and quota's
usage must equal the usage recomputed from the instances. No service may have died on its own.
The whole stack runs as real processes (tests/system.py), with two replicas of every service but
the gateway, on a vhost and database of its own; it restarts the machine's real RabbitMQ and
PostgreSQL. A fault's recovery time runs from the fault until a launch made after it is running.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika
import asyncpg
import httpx

from shared.events import EXCHANGE
from shared.logging import configure_logging
from shared.services import SERVICES
from shared.testing import wait_until
from tests.infra import Infrastructure, provide_infrastructure
from tests.system import (
    ADMIN_PASSWORD,
    System,
    add_simulator_accounts,
    login,
    new_user,
    running_system,
)

REPLICAS = {"scheduler": 2, "poller": 2, "quota": 2, "notifier": 2}
SETTLED = ("running", "rejected", "error", "terminated")
RECOVERY_LIMIT = 120.0


@dataclass
class Report:
    recovery_s: dict[str, float] = field(default_factory=dict)
    accepted: int = 0
    settled: int = 0
    stuck: dict[str, int] = field(default_factory=dict)
    changes_recorded: int = 0  # state changes the poller recorded (its instances' transitions)
    changes_seen: int = 0  # distinct CloudEvents the subscriber got
    changes_missing: int = 0
    duplicates_before_dedupe: int = 0
    usage_drift: list[str] = field(default_factory=list)
    died: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            not self.stuck
            and self.changes_missing == 0
            and not self.usage_drift
            and not self.died
            and self.settled == self.accepted
        )

    def table(self) -> str:
        lines = [f"{'fault':<34}{'recovery (s)':>14}"]
        lines += [f"{name:<34}{seconds:>14.1f}" for name, seconds in self.recovery_s.items()]
        lines += [
            "",
            f"{'launches accepted':<34}{self.accepted:>14}",
            f"{'launches settled':<34}{self.settled:>14}",
            f"{'launches lost or stuck':<34}{sum(self.stuck.values()):>14}  {self.stuck or ''}",
            f"{'state changes recorded':<34}{self.changes_recorded:>14}",
            f"{'state changes seen (distinct ids)':<34}{self.changes_seen:>14}",
            f"{'state changes lost':<34}{self.changes_missing:>14}",
            f"{'duplicates before dedupe':<34}{self.duplicates_before_dedupe:>14}",
            f"{'quota usage drift':<34}{len(self.usage_drift):>14}  {self.usage_drift or ''}",
            f"{'services that died on their own':<34}{len(self.died):>14}  {self.died or ''}",
        ]
        return "\n".join(lines)


class Subscriber:
    """An external system: a durable queue of its own, every state change kept with its id."""

    def __init__(self, amqp_url: str) -> None:
        self._url = amqp_url
        self.ids: Counter[str] = Counter()
        self.changes: dict[str, tuple[str, str, str]] = {}  # id → (instance, old, new)

    async def __aenter__(self) -> Subscriber:
        self._connection = await aio_pika.connect_robust(self._url)
        channel = await self._connection.channel()
        exchange = await channel.declare_exchange(EXCHANGE, "topic", durable=True)
        queue = await channel.declare_queue(
            f"chaos.subscriber.{uuid.uuid4().hex[:6]}",
            durable=True,
            arguments={"x-queue-type": "quorum"},
        )
        await queue.bind(exchange, "instance.state_changed")
        await queue.consume(self._arrived)
        return self

    async def _arrived(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        event = json.loads(message.body)
        data = event["data"]
        self.ids[event["id"]] += 1
        self.changes[event["id"]] = (data["instance_id"], data["old_state"], data["new_state"])
        await message.ack()

    async def __aexit__(self, *_exc: object) -> None:
        await self._connection.close()


@dataclass
class Load:
    """Launches at a steady rate; what the API accepted (202) is remembered."""

    client: httpx.AsyncClient
    tokens: list[str]
    rate: float
    accepted: list[str] = field(default_factory=list)
    refused: Counter[str] = field(default_factory=Counter)

    async def run(self, stop: asyncio.Event) -> None:
        n = 0
        in_flight: set[asyncio.Task[str | None]] = set()
        while not stop.is_set():
            n += 1
            task = asyncio.create_task(self.launch(self.tokens[n % len(self.tokens)]))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1 / self.rate)
        await asyncio.gather(*in_flight)

    async def launch(self, token: str) -> str | None:
        try:
            response = await self.client.post(
                "/v1/instances",
                json={"name": "chaos", "image": "debian-12", "cpus": 1, "memory_mb": 256},
                headers={"Authorization": token},
            )
        except httpx.HTTPError as exc:
            self.refused[type(exc).__name__] += 1
            return None
        if response.status_code != 202:
            self.refused[str(response.status_code)] += 1
            return None
        instance_id = response.json()["id"]
        self.accepted.append(instance_id)
        return instance_id


async def _state(db: asyncpg.Connection, instance_id: str) -> str | None:
    return await db.fetchval("SELECT state FROM gateway.instances WHERE id = $1", instance_id)


async def recovered_after(load: Load, db: asyncpg.Connection, began: float) -> float:
    """Seconds from ``began`` until a launch made now reaches running."""

    async def probe_launch() -> str | None:
        return await load.launch(load.tokens[0])

    instance_id = await wait_until(probe_launch, timeout=RECOVERY_LIMIT, interval=0.5)

    async def running() -> bool:
        return await _state(db, instance_id) == "running"

    await wait_until(running, timeout=RECOVERY_LIMIT, interval=0.1, what="a launch running")
    return time.monotonic() - began


async def _setup(system: System) -> tuple[httpx.AsyncClient, list[str]]:
    client = httpx.AsyncClient(base_url=system.gateway_url, timeout=15)
    admin = await login(client, "admin", ADMIN_PASSWORD)
    tokens = []
    for n in range(4):
        name = f"chaos-{n}"
        tokens.append((await new_user(client, admin, name, f"{name}-password"))["Authorization"])
    await add_simulator_accounts(
        client, admin, system, 2, simulator={"timings": {"boot": 1}}, poll_interval=1
    )
    return client, tokens


async def _faults(infra: Infrastructure, system: System, load: Load, db_url: str) -> dict:
    recovery: dict[str, float] = {}

    async def timed(name: str, fault) -> None:
        began = time.monotonic()
        await fault()
        db = await _connect_patiently(db_url)
        try:
            recovery[name] = await recovered_after(load, db, began)
        finally:
            await db.close()

    async def rabbitmq() -> None:
        await asyncio.to_thread(infra.rabbit, "stop_app")
        await asyncio.to_thread(infra.rabbit, "start_app")

    async def postgresql() -> None:
        await asyncio.to_thread(infra.postgres, "restart")

    await timed("restart RabbitMQ", rabbitmq)
    await timed("restart PostgreSQL", postgresql)
    for service in SERVICES:

        async def kill_and_start(service: str = service) -> None:
            system.kill(service, 0, signal.SIGKILL)
            system.start(service, index=0)

        await timed(f"kill -9 {service} (one replica)", kill_and_start)
    return recovery


async def _connect_patiently(db_url: str) -> asyncpg.Connection:
    async def connect() -> asyncpg.Connection | None:
        try:
            return await asyncpg.connect(db_url)
        except (OSError, asyncpg.PostgresError):
            return None

    return await wait_until(connect, timeout=RECOVERY_LIMIT, interval=0.5, what="database")


async def _check(report: Report, load: Load, subscriber: Subscriber, db_url: str) -> None:
    db = await _connect_patiently(db_url)
    try:

        async def all_settled() -> bool:
            unsettled = await db.fetchval(
                "SELECT count(*) FROM gateway.instances WHERE id = ANY($1::uuid[])"
                " AND state <> ALL($2::text[])",
                load.accepted,
                list(SETTLED),
            )
            return unsettled == 0

        try:
            await wait_until(all_settled, timeout=RECOVERY_LIMIT, interval=0.5)
        except TimeoutError:
            pass  # reported below
        states = Counter(
            r["state"]
            for r in await db.fetch(
                "SELECT state FROM gateway.instances WHERE id = ANY($1::uuid[])", load.accepted
            )
        )
        report.accepted = len(load.accepted)
        report.settled = sum(n for s, n in states.items() if s in SETTLED)
        missing = report.accepted - sum(states.values())
        report.stuck = {s: n for s, n in states.items() if s not in SETTLED}
        if missing:
            report.stuck["never recorded"] = missing
        # Every transition the poller recorded for these instances reached the subscriber.
        recorded = {
            (str(r["instance_id"]), r["state"])
            for r in await db.fetch(
                "SELECT instance_id, state FROM poller.instances WHERE instance_id = ANY($1)",
                load.accepted,
            )
        }

        async def seen_all() -> bool:
            seen = {(i, new) for i, _, new in subscriber.changes.values()}
            return recorded <= seen

        try:
            await wait_until(seen_all, timeout=30, interval=0.2)
        except TimeoutError:
            pass  # reported below
        seen = {(i, new) for i, _, new in subscriber.changes.values()}
        report.changes_recorded = len(recorded)
        report.changes_seen = len(subscriber.ids)
        report.changes_missing = len(recorded - seen)
        report.duplicates_before_dedupe = sum(subscriber.ids.values()) - len(subscriber.ids)
        # Quota's usage against what the instances hold now (stopped ones count too).
        held = {
            r["owner"]: (r["n"], r["cpus"], r["memory_mb"])
            for r in await db.fetch(
                """SELECT owner, count(*) AS n, sum(cpus) AS cpus, sum(memory_mb) AS memory_mb
                   FROM gateway.instances
                   WHERE state NOT IN ('rejected', 'error', 'terminated') GROUP BY owner"""
            )
        }
        usage = {
            r["owner"]: (r["instances"], r["cpus"], r["memory_mb"])
            for r in await db.fetch("SELECT owner, instances, cpus, memory_mb FROM quota.usage")
        }
        for owner in set(held) | set(usage):
            if held.get(owner, (0, 0, 0)) != usage.get(owner, (0, 0, 0)):
                report.usage_drift.append(f"{owner}: quota {usage.get(owner)} != {held.get(owner)}")
    finally:
        await db.close()


async def run_chaos(infra: Infrastructure, logs: Path, *, rate: float, rounds: int) -> Report:
    report = Report()
    with (
        infra.isolated() as (amqp_url, database_url),
        running_system(
            amqp_url,
            database_url,
            logs,
            replicas=REPLICAS,
            env={
                "BOREAS_POLL_INTERVAL": "1",
                "BOREAS_DB_POOL_SIZE": "6",
                "BOREAS_CONSUMER_CONNECTIONS": "3",
            },
        ) as system,
    ):
        client, tokens = await _setup(system)
        try:
            async with Subscriber(amqp_url) as subscriber:
                load = Load(client, tokens, rate)
                stop = asyncio.Event()
                steady = asyncio.create_task(load.run(stop))
                for round_ in range(rounds):
                    recovery = await _faults(infra, system, load, database_url)
                    suffix = f" #{round_ + 1}" if rounds > 1 else ""
                    report.recovery_s.update({f"{k}{suffix}": v for k, v in recovery.items()})
                stop.set()
                await steady
                await _check(report, load, subscriber, database_url)
        finally:
            await client.aclose()
        report.died = system.died()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=10.0, help="launches per second")
    parser.add_argument("--rounds", type=int, default=2, help="times through the faults")
    args = parser.parse_args()
    configure_logging("chaos", "WARNING")
    logs = Path(".chaos") / time.strftime("%Y%m%d-%H%M%S")
    with provide_infrastructure() as infra:
        report = asyncio.run(run_chaos(infra, logs, rate=args.rate, rounds=args.rounds))
    print(report.table())
    print(f"\nlogs: {logs}")
    sys.exit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
