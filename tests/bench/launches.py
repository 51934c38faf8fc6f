"""Launches through the whole stack, as real processes: how many the API accepts, how many a
second reach ``running``, how long one takes, and how fast a state change reaches a subscriber.

"Running" means visible through the API: the gateway's read model (what ``GET /v1/instances``
serves) shows the instance running; its ``updated_at - created_at`` is a launch's latency.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import aio_pika
import asyncpg
import httpx

from shared.clouds.simulator.driver import SimulatorNodeDriver
from shared.events import EXCHANGE
from tests.bench.harness import Setup, launch_requests, loadgen, prepare, wrk
from tests.system import System, add_simulator_accounts, running_system

STEADY_FROM = 5.0  # seconds into a run before completions count (the pipeline fills up)
DRAIN_LIMIT = 60.0  # seconds a run's backlog may take to reach running afterwards
DRAIN_CHECK = 0.5  # seconds between two looks at the backlog while it drains
# A steered run keeps this many seconds of launches accepted but not yet running, beyond the
# launches a launch's own latency keeps in flight: enough that the stack never waits for work,
# little enough that it drains in seconds afterwards.
BACKLOG_SECONDS = 2.0


@dataclass(frozen=True)
class Run:
    per_s: float  # launches reaching running per second in the steady window
    offered_per_s: float
    accepted: int
    settled: int  # of those accepted, how many reached running
    stuck: int  # accepted and not running after the drain limit
    stuck_states: dict[str, int]
    drain_s: float
    p50_ms: float
    p99_ms: float


async def _progress(db: asyncpg.Connection, since: datetime) -> tuple[int, int]:
    """(launches accepted since ``since``, of those running)."""
    row = await db.fetchrow(
        """SELECT count(*) AS accepted, count(*) FILTER (WHERE state = 'running') AS running
           FROM gateway.instances WHERE created_at >= $1""",
        since,
    )
    return row["accepted"], row["running"]


async def _latencies(db: asyncpg.Connection, since: datetime) -> list[float]:
    rows = await db.fetch(
        """SELECT extract(epoch FROM updated_at - created_at) * 1000 AS ms
           FROM gateway.instances WHERE created_at >= $1 AND state = 'running' ORDER BY ms""",
        since,
    )
    return [float(r["ms"]) for r in rows]


async def _recent_latency(db: asyncpg.Connection, since: datetime) -> float:
    """Seconds a launch takes now: the median of those that reached running in the last 3 s."""
    seconds = await db.fetchval(
        """SELECT percentile_cont(0.5) WITHIN GROUP (
                      ORDER BY extract(epoch FROM updated_at - created_at))
           FROM gateway.instances
           WHERE created_at >= $1 AND state = 'running' AND updated_at > now() - interval '3 s'""",
        since,
    )
    return float(seconds or 1.0)


def _percentile(ordered: list[float], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


async def launch_run(
    system: System,
    setup: Setup,
    *,
    rate: float,
    seconds: float,
    placement: dict | None = None,
    steer: bool = False,
) -> Run:
    """Offer launches at ``rate`` for ``seconds`` (``steer``: starting there, then as fast as
    they reach running, plus a small backlog), count what reaches running, then wait for the
    backlog to drain: nothing may stay behind."""
    db = await asyncpg.connect(system.database_url)
    control = _rate_file(rate)
    try:
        since = await db.fetchval("SELECT now()")
        plan = {
            "url": f"{system.gateway_url}/v1/instances",
            "method": "POST",
            "rate": rate,
            "duration": seconds,
            "connections": 64,
            "requests": launch_requests(setup, placement),
            **({"rate_file": str(control)} if steer else {}),
        }
        generator = asyncio.create_task(loadgen(plan))
        began = time.monotonic()
        samples: list[tuple[float, int]] = []
        while not generator.done():
            accepted, running = await _progress(db, since)
            samples.append((time.monotonic() - began, running))
            if steer:
                latency = await _recent_latency(db, since)
                rate = _steered_rate(samples, accepted - running, rate, latency)
                _write_rate(control, rate)
            await asyncio.wait({generator}, timeout=1.0)
        offered = generator.result()
        window = [(t, n) for t, n in samples if t >= STEADY_FROM]
        window = window if len(window) >= 2 else samples
        (t0, n0), (t1, n1) = window[0], window[-1]
        drained_at = time.monotonic()
        while time.monotonic() - drained_at < DRAIN_LIMIT:
            accepted, running = await _progress(db, since)
            if running >= accepted:
                break
            await asyncio.sleep(DRAIN_CHECK)  # polling the read model: no event to wait on here
        drain = time.monotonic() - drained_at
        accepted, running = await _progress(db, since)
        latencies = await _latencies(db, since)
        stuck_states = {
            r["state"]: r["n"]
            for r in await db.fetch(
                """SELECT state, count(*) AS n FROM gateway.instances
                   WHERE created_at >= $1 AND state <> 'running' GROUP BY state""",
                since,
            )
        }
    finally:
        await db.close()
        _write_rate(control, None)
    return Run(
        per_s=(n1 - n0) / (t1 - t0) if t1 > t0 else 0.0,
        offered_per_s=offered["per_s"],
        accepted=accepted,
        settled=running,
        stuck=accepted - running,
        stuck_states=stuck_states,
        drain_s=drain,
        p50_ms=_percentile(latencies, 0.5),
        p99_ms=_percentile(latencies, 0.99),
    )


def _rate_file(rate: float) -> Path:
    control = Path(tempfile.mkstemp(suffix=".rate")[1])
    _write_rate(control, rate)
    return control


def _write_rate(control: Path, rate: float | None) -> None:
    """Tell the generator its rate (a few bytes on a local disk); None: remove the file."""
    if rate is None:
        control.unlink(missing_ok=True)
    else:
        control.write_text(str(rate))


def _steered_rate(
    samples: list[tuple[float, int]], backlog: int, rate: float, latency: float
) -> float:
    """A fifth more while the backlog is under its target, a tenth less while it is over: the
    offer settles around what the stack carries. A launch takes about ``latency`` seconds, so
    that many seconds of launches are in flight anyway, on top of the backlog wanted."""
    recent = samples[-4:]
    (t0, n0), (t1, n1) = recent[0], recent[-1]
    done = (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0
    if backlog < max(50.0, done * (latency + BACKLOG_SECONDS)):
        return rate * 1.2
    return max(5.0, rate * 0.9)


class StateChangeWatch:
    """An external subscriber: its own queue on ``boreas.events`` for instance.state_changed,
    noting for each CloudEvent how long after the poller saw the change it arrived."""

    def __init__(self, amqp_url: str) -> None:
        self._url = amqp_url
        self.delays_ms: list[float] = []

    async def __aenter__(self) -> StateChangeWatch:
        self._connection = await aio_pika.connect(self._url)
        channel = await self._connection.channel()
        exchange = await channel.declare_exchange(EXCHANGE, "topic", durable=True)
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, "instance.state_changed")
        await queue.consume(self._arrived, no_ack=True)
        return self

    async def _arrived(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        arrived = time.time()
        observed = datetime.fromisoformat(json.loads(message.body)["data"]["observed_at"])
        self.delays_ms.append((arrived - observed.timestamp()) * 1000)

    async def __aexit__(self, *_exc: object) -> None:
        await self._connection.close()


async def raw_publish_consume_p99(amqp_url: str, n: int = 1000, rate: float = 200.0) -> float:
    """The floor for an event's trip: bare aio-pika, a confirmed persistent publish to a topic
    exchange and a consumer on a quorum queue bound to it; p99 of publish → arrival, in ms."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange("bench.raw-latency", "topic", auto_delete=True)
        queue = await channel.declare_queue(
            "bench.raw-latency", durable=True, arguments={"x-queue-type": "quorum"}
        )
        await queue.bind(exchange, "raw")
        delays: list[float] = []
        done = asyncio.Event()

        async def arrived(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            delays.append((time.time() - float(message.body)) * 1000)
            await message.ack()
            if len(delays) >= n:
                done.set()

        await queue.consume(arrived)
        for _ in range(n):
            sent = time.time()
            await exchange.publish(aio_pika.Message(str(sent).encode(), delivery_mode=2), "raw")
            await asyncio.sleep(max(0.0, 1 / rate - (time.time() - sent)))  # the offered rate
        await asyncio.wait_for(done.wait(), 30)
        await queue.delete(if_unused=False, if_empty=False)
    return _percentile(sorted(delays), 0.99)


def raw_creates_per_s(simulator_url: str, *, latency: float, accounts: int = 4) -> float:
    """The cloud's own ceiling: creates per second straight through the simulated cloud's
    libcloud driver, as many in flight as Boreas' default budgets allow (16 per account)."""
    in_flight = 16 * accounts
    drivers = []
    for n in range(in_flight):
        driver = SimulatorNodeDriver(
            f"raw-{n % accounts}-{uuid.uuid4().hex[:4]}", "raw-secret", endpoint=simulator_url
        )
        driver.ex_ensure_account({"api_latency": latency, "timings": {"boot": 0}})
        drivers.append(driver)
    size, image = drivers[0].list_sizes()[0], drivers[0].list_images()[0]
    per_driver = max(2, round(3 / latency)) if latency else 5

    def create_some(driver: SimulatorNodeDriver) -> None:
        for _ in range(per_driver):
            driver.create_node(name="raw", size=size, image=image)

    began = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(in_flight) as threads:
        list(threads.map(create_some, drivers))
    return in_flight * per_driver / (time.perf_counter() - began)


async def _with_stack(
    amqp_url: str,
    database_url: str,
    logs: Path,
    body: Callable[[System], Awaitable[dict]],
    **options: object,
) -> dict:
    with running_system(amqp_url, database_url, logs, **options) as system:  # type: ignore[arg-type]
        return await body(system)


async def measure_acceptance(amqp_url: str, database_url: str, logs: Path) -> dict:
    """The API tier alone (the rest of the stack stopped, so it does not compete for the two
    cores): launches answered 202 per second by wrk, next to wrk against ``/healthz`` on the
    same server, and the Python load generator's own ceiling there."""

    async def body(system: System) -> dict:
        setup = await prepare(system, accounts=1)
        bare = wrk(f"{system.gateway_url}/healthz", seconds=5, connections=64)
        generator = await loadgen(
            {"url": f"{system.gateway_url}/healthz", "duration": 3, "connections": 64}
        )
        accepted = wrk(
            f"{system.gateway_url}/v1/instances",
            seconds=5,
            connections=64,
            method="POST",
            requests=launch_requests(setup),
        )
        return {
            "ceiling_http_per_s": round(bare["per_s"]),
            "accept_per_s": round(accepted["ok_per_s"]),
            "accept_p99_ms": accepted["latency_p99_ms"],
            "accept_not_2xx": accepted["not_2xx"],
            "loadgen_ceiling_per_s": round(generator["per_s"]),
        }

    workers = {"BOREAS_GATEWAY_WORKERS": "2"}
    idle = {"scheduler": 0, "poller": 0, "quota": 0, "notifier": 0}
    return await _with_stack(
        amqp_url, database_url, logs / "accept", body, replicas=idle, env=workers
    )


async def measure_launches(amqp_url: str, database_url: str, logs: Path) -> dict:
    """Launch throughput and latency through the whole stack on four simulated accounts."""

    async def body(system: System) -> dict:
        setup = await prepare(system, accounts=4, poll_interval=1.0)
        # Warm up (drivers, catalogs, connections); then the sustained run, steered to offer
        # what the stack carries plus a small backlog.
        await launch_run(system, setup, rate=50, seconds=4)
        zero = await launch_run(system, setup, rate=40, seconds=30, steer=True)
        # Latency at 50 launches/s offered; an event's trip from the poller to a subscriber at
        # that load and, below, with the stack nearly idle (5/s), next to bare aio-pika's.
        async with StateChangeWatch(system.amqp_url) as loaded:
            steady = await launch_run(system, setup, rate=50, seconds=15)
        async with StateChangeWatch(system.amqp_url) as quiet:
            await launch_run(system, setup, rate=5, seconds=8)
        raw_p99 = await raw_publish_consume_p99(system.amqp_url)
        # The slow cloud: 300 ms per API call, 2 s boot, on accounts of its own (region "slow").
        async with httpx.AsyncClient(base_url=system.gateway_url, timeout=30) as client:
            await add_simulator_accounts(
                client,
                setup.admin,
                system,
                4,
                simulator={"api_latency": 0.3, "timings": {"boot": 2}},
                poll_interval=1.0,
                regions=("slow",),
            )
        ceiling = await asyncio.to_thread(raw_creates_per_s, system.simulator_url, latency=0)
        slow_ceiling = await asyncio.to_thread(raw_creates_per_s, system.simulator_url, latency=0.3)
        slow = await launch_run(
            system,
            setup,
            rate=40,
            seconds=20,
            placement={"region": "slow"},
            steer=True,
        )
        rss = max(r.rss_mb() for r in system.all())
        return {
            "launch_per_s": round(zero.per_s, 1),
            "launch_offered_per_s": round(zero.offered_per_s, 1),
            "launch_stuck": zero.stuck + steady.stuck + slow.stuck,
            "launch_stuck_states": zero.stuck_states | steady.stuck_states | slow.stuck_states,
            "launch_drain_s": round(zero.drain_s, 1),
            "launch_per_s_slow_cloud": round(slow.per_s, 1),
            "ceiling_launch_per_s": round(ceiling, 1),
            "ceiling_launch_per_s_slow_cloud": round(slow_ceiling, 1),
            "launch_p50_ms": round(steady.p50_ms),
            "launch_p99_ms": round(steady.p99_ms),
            "launch_poll_interval_ms": 1000,
            "event_p99_ms": round(_percentile(sorted(quiet.delays_ms), 0.99), 1),
            "event_p50_ms": round(_percentile(sorted(quiet.delays_ms), 0.5), 1),
            "event_p99_ms_at_50_per_s": round(_percentile(sorted(loaded.delays_ms), 0.99), 1),
            "ceiling_event_p99_ms": round(raw_p99, 1),
            "rss_mb_launch_stack": round(rss),
        }

    return await _with_stack(
        amqp_url,
        database_url,
        logs / "launches",
        body,
        env={"BOREAS_POLL_INTERVAL": "1"},
    )
