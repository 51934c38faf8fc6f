"""The poller at scale: 1,000 simulated-cloud accounts of 100 Boreas instances each (100,000 nodes),
all running and known to the poller as running, against the raw cost of the same listings.

Set up, untimed: the simulated cloud as a process, its accounts and nodes seeded by SQL; the
poller process started once (it migrates and attaches its consumers), then its accounts (credentials
sealed with the key the process has) and instances inserted by SQL to match, none of them due.

- A full cycle: every account made due at once; timed until each has a poll row newer than that.
  The first cycle builds the drivers (``_cold``); the second is the figure. Its provider calls
  are its ok rows in ``poller.polls``; its events are the ``instance.state_changed`` events
  observed in that cycle (a probe's, counted at the end so none is still on its way) plus any
  left in the poller's outbox: nothing changed, so both must be 0. CPU is the poller process's
  (all threads, from /proc) over the cycle; the simulator's too, to tell which side is the
  bottleneck (both share this machine's cores with PostgreSQL).
- The steady state: next polls spread evenly over the idle interval; the poller's CPU share over
  ``IDLE_WINDOW`` seconds, and the polls it made in them.
- The ceiling: the same 1,000 listings through the simulator's libcloud driver, ``CONCURRENCY``
  at a time on threads, without database or diff: the faster of two passes after a first that
  builds and connects the drivers. Measured before the poller starts, so nothing else runs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from shared.clouds.simulator.driver import SimulatorNodeDriver
from shared.clouds.simulator.model import AccountSettings
from shared.clouds.simulator.server import _secret_hash
from shared.credentials import CredentialCipher, new_key_text
from shared.events import InstanceStateChanged, ServiceHeartbeat
from shared.testing import EventProbe, wait_until
from tests.system import Replica, System

ACCOUNTS = 1000
NODES_PER_ACCOUNT = 100
POLL_INTERVAL = 10.0
IDLE_INTERVAL = 100.0
CONCURRENCY = 16
IDLE_WINDOW = 30.0
# Part of the measurement, not a wait on a condition: time for the poller to be on the new
# schedule before the idle window opens.
RESCHEDULE_SETTLE_S = 1.0
REGIONS = ["north", "south"]
SECRET = "bench-secret"


@dataclass(frozen=True)
class Cycle:
    seconds: float
    cpu_seconds: float  # the poller's
    simulator_cpu_seconds: float
    ok_polls: int
    failed_polls: int
    began: datetime
    ended: datetime


def measure_polling(amqp_url: str, database_url: str, logs: Path) -> dict[str, float]:
    """Blocking (runs its own event loop). Starts and stops its own simulator and poller."""
    logs.mkdir(parents=True, exist_ok=True)
    key = new_key_text()
    system = System(
        amqp_url,
        database_url,
        logs,
        {
            "BOREAS_SECRET_KEY": key,
            "BOREAS_LOG_LEVEL": "WARNING",
            "BOREAS_POLL_INTERVAL": str(POLL_INTERVAL),
            "BOREAS_POLL_IDLE_INTERVAL": str(IDLE_INTERVAL),
            "BOREAS_POLL_CONCURRENCY": str(CONCURRENCY),
        },
    )
    try:
        return asyncio.run(_measure(system, key))
    finally:
        system.stop()


async def _measure(system: System, key: str) -> dict[str, float]:
    tag = uuid.uuid4().hex[:6]
    system.start_simulator()
    conn = await asyncpg.connect(system.database_url)
    try:
        await _seed_cloud(conn, tag)
        ceiling = _list_all(system.simulator_url, tag)
        poller = await _start_poller(system)
        await _seed_poller(conn, tag, system.simulator_url, key)
        async with EventProbe(system.amqp_url, pattern=InstanceStateChanged.TOPIC) as probe:
            cold = await _cycle(conn, poller, _simulator(system), tag)
            warm = await _cycle(conn, poller, _simulator(system), tag)
            idle_cpu, idle_polls = await _idle(conn, poller, tag)
            quiet_events = _events_within(probe, warm) + await _outbox_rows(conn)
        return {
            "poll_cycle_s_100k_cold": cold.seconds,
            "poll_cycle_s_100k": warm.seconds,
            "poll_cycle_provider_calls": warm.ok_polls,
            "poll_cycle_failed_polls": warm.failed_polls,
            "poll_cycle_quiet_events": quiet_events,
            "poll_cycle_cpu_cores": warm.cpu_seconds / warm.seconds,
            "poll_busy_cpu_pct": warm.cpu_seconds / warm.seconds * 100,
            "simulator_cycle_cpu_cores": warm.simulator_cpu_seconds / warm.seconds,
            "poll_idle_cpu_pct": idle_cpu / IDLE_WINDOW * 100,
            "poll_idle_polls": idle_polls,
            "ceiling_poll_cycle_s": ceiling,
            "poller_rss_mb_100k": poller.rss_mb(),
            "simulator_rss_mb_100k": _simulator(system).rss_mb(),
        }
    finally:
        await conn.close()


def _simulator(system: System) -> Replica:
    assert system.simulator is not None
    return Replica("simulator", 0, system.simulator)


def _api_key(tag: str, n: int) -> str:
    return f"bench-poll-{tag}-{n}"


def _account_id(tag: str, n: int) -> str:
    return f"bench-account-{tag}-{n}"


# -- setting up ---------------------------------------------------------------------------------


async def _seed_cloud(conn: asyncpg.Connection, tag: str) -> None:
    """The simulated cloud's accounts (as ``PUT /v1/account`` would store them) and their nodes,
    running for an hour, each tagged with its Boreas instance."""
    settings = AccountSettings(regions=tuple(REGIONS)).model_dump_json()
    await conn.execute(
        """INSERT INTO simulator.accounts (api_key, secret_hash, settings)
           SELECT 'bench-poll-' || $1 || '-' || a, $2, $3::jsonb FROM generate_series(1, $4) a""",
        tag,
        _secret_hash(SECRET),
        settings,
        ACCOUNTS,
    )
    await conn.execute(
        """INSERT INTO simulator.nodes (id, api_key, name, size_id, image_id, region, tags, state,
                                        since, created_at)
           SELECT 'sim-' || $1 || '-' || a || '-' || n, 'bench-poll-' || $1 || '-' || a,
                  'node-' || n, 'sim.small', 'img-debian-12', 'north',
                  jsonb_build_object('boreas-instance', md5($1 || '-' || a || '-' || n)::uuid),
                  'running', now() - interval '1 hour',
                  now() - interval '1 hour' + n * interval '1 millisecond'
           FROM generate_series(1, $2) a, generate_series(1, $3) n""",
        tag,
        ACCOUNTS,
        NODES_PER_ACCOUNT,
    )
    await _settle_tables(conn, "simulator.accounts", "simulator.nodes")


async def _start_poller(system: System) -> Replica:
    """Start the poller and wait for its first heartbeat: sent once it has migrated."""
    async with EventProbe(system.amqp_url, pattern=ServiceHeartbeat.TOPIC) as beats:
        poller = system.start("poller")
        await beats.wait_for(
            ServiceHeartbeat.TOPIC, lambda e: e.data["service"] == "poller", timeout=60
        )
    return poller


async def _seed_poller(conn: asyncpg.Connection, tag: str, simulator_url: str, key: str) -> None:
    """The poller's accounts and instances, as the events would have left them: every instance
    running, no account due."""
    cipher = CredentialCipher.from_texts(key)
    ids = [_account_id(tag, n) for n in range(1, ACCOUNTS + 1)]
    sealed = [
        cipher.seal(
            account_id, {"api_key": _api_key(tag, n), "api_secret": SECRET}
        ).model_dump_json()
        for n, account_id in enumerate(ids, start=1)
    ]
    config = {"endpoint": simulator_url, "regions": REGIONS}
    await conn.execute(
        """INSERT INTO poller.accounts (id, name, provider, config, credentials, revision,
                                        next_poll_at)
           SELECT id, id, 'simulator', $3::jsonb, credentials, 1, now() + interval '1 day'
           FROM unnest($1::text[], $2::jsonb[]) AS a(id, credentials)""",
        ids,
        sealed,
        json.dumps(config),
    )
    await conn.execute(
        """INSERT INTO poller.instances (instance_id, owner, account_id, provider,
                                         provider_instance_id, cpus, memory_mb, state, observed_at)
           SELECT md5($1 || '-' || a || '-' || n)::uuid, 'bench-owner',
                  'bench-account-' || $1 || '-' || a, 'simulator',
                  'sim-' || $1 || '-' || a || '-' || n, 1, 1024, 'running',
                  now() - interval '1 hour'
           FROM generate_series(1, $2) a, generate_series(1, $3) n""",
        tag,
        ACCOUNTS,
        NODES_PER_ACCOUNT,
    )
    await _settle_tables(conn, "poller.accounts", "poller.instances")


async def _settle_tables(conn: asyncpg.Connection, *tables: str) -> None:
    """Vacuumed and analysed, as tables that grew to this size over time would be: planner
    statistics, and no autovacuum of a fresh bulk insert running into a measurement."""
    for table in tables:
        await conn.execute(f"VACUUM (ANALYZE) {table}")


# -- measuring ----------------------------------------------------------------------------------


async def _cycle(conn: asyncpg.Connection, poller: Replica, simulator: Replica, tag: str) -> Cycle:
    """Every account due at once; until each has been polled since."""
    began = datetime.now(UTC)
    cpu, simulator_cpu = poller.cpu_seconds(), simulator.cpu_seconds()
    started = time.perf_counter()
    await conn.execute(
        "UPDATE poller.accounts SET next_poll_at = now() WHERE id LIKE $1", f"bench-account-{tag}-%"
    )
    await wait_until(
        lambda: _polled_since(conn, began), timeout=300, interval=0.05, what="a full poll cycle"
    )
    seconds = time.perf_counter() - started
    cpu, simulator_cpu = poller.cpu_seconds() - cpu, simulator.cpu_seconds() - simulator_cpu
    ended = datetime.now(UTC)
    ok, failed = await _polls_between(conn, began, ended)
    return Cycle(seconds, cpu, simulator_cpu, ok, failed, began, ended)


async def _polled_since(conn: asyncpg.Connection, since: datetime) -> bool:
    polled = await conn.fetchval(
        "SELECT count(DISTINCT account_id) FROM poller.polls WHERE at >= $1", since
    )
    return polled >= ACCOUNTS


async def _polls_between(
    conn: asyncpg.Connection, began: datetime, ended: datetime
) -> tuple[int, int]:
    row = await conn.fetchrow(
        """SELECT count(*) FILTER (WHERE ok) AS ok, count(*) FILTER (WHERE NOT ok) AS failed
           FROM poller.polls WHERE at >= $1 AND at < $2""",
        began,
        ended,
    )
    return row["ok"], row["failed"]


async def _idle(conn: asyncpg.Connection, poller: Replica, tag: str) -> tuple[float, int]:
    """Next polls spread evenly over the idle interval; the poller's CPU seconds and polls over
    ``IDLE_WINDOW`` seconds."""
    await conn.execute(
        """UPDATE poller.accounts a SET next_poll_at = now() + make_interval(secs => $2 * r.n / $3)
           FROM (SELECT id, row_number() OVER (ORDER BY id) - 1 AS n FROM poller.accounts
                 WHERE id LIKE $1) r
           WHERE a.id = r.id""",
        f"bench-account-{tag}-%",
        IDLE_INTERVAL,
        float(ACCOUNTS),
    )
    await asyncio.sleep(RESCHEDULE_SETTLE_S)
    began, cpu = datetime.now(UTC), poller.cpu_seconds()
    await asyncio.sleep(IDLE_WINDOW)  # the measurement window itself
    cpu, ended = poller.cpu_seconds() - cpu, datetime.now(UTC)
    ok, failed = await _polls_between(conn, began, ended)
    return cpu, ok + failed


def _events_within(probe: EventProbe, cycle: Cycle) -> int:
    """State changes the poller observed during ``cycle`` (by their ``observed_at``)."""
    return len(
        probe.matching(
            InstanceStateChanged.TOPIC,
            lambda e: cycle.began <= datetime.fromisoformat(e.data["observed_at"]) <= cycle.ended,
        )
    )


async def _outbox_rows(conn: asyncpg.Connection) -> int:
    return await conn.fetchval("SELECT count(*) FROM poller.outbox")


# -- the ceiling --------------------------------------------------------------------------------


def _list_all(simulator_url: str, tag: str) -> float:
    """Seconds to list every account once through the libcloud driver, ``CONCURRENCY`` at a time
    on threads: a first pass builds and connects the drivers (as the poller's cold cycle does),
    and the faster of the two after it is the floor."""
    drivers = [
        SimulatorNodeDriver(_api_key(tag, n), SECRET, endpoint=simulator_url)
        for n in range(1, ACCOUNTS + 1)
    ]
    passes = []
    with concurrent.futures.ThreadPoolExecutor(CONCURRENCY) as threads:
        for _ in range(3):
            began = time.perf_counter()
            listed = list(threads.map(lambda d: len(d.list_nodes()), drivers))
            passes.append(time.perf_counter() - began)
            assert listed == [NODES_PER_ACCOUNT] * ACCOUNTS, "every account lists its nodes"
    return min(passes[1:])
