"""A service process's life: connect, migrate, attach consumers, heartbeat, and stop cleanly.

Every service builds its runtime in one place, ``services/<name>/bootstrap.py``: its settings,
its migrations, its table of subscriptions, and a ``wire`` function that, once the runtime has
its pool and bus, makes the handlers' dependencies (:mod:`shared.injection`) and the service's
own background loops. ``__main__`` runs what ``bootstrap.build`` returns; the tests run the same.

Background loops (the outbox relay, polling, webhook delivery, …) are supervised: a loop that
raises is restarted with a growing delay, and named in every heartbeat while it is down, so
``/v1/status`` shows the service as not alive. A loop that keeps failing for another reason than
a lost database or broker connection makes the process exit with status 1, for its supervisor
(systemd, Kubernetes, ``make run``) to start it afresh. A loop that works in rounds is written
with :func:`shared.loops.every`, which rides out a database outage within the loop instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import NoReturn, TypeVar

import asyncpg
import structlog
import tenacity
import uvloop

from shared.balancer import balance_forever
from shared.bus import TRANSIENT_BUS_ERRORS, Bus
from shared.config import ServiceSettings
from shared.consumer import ConsumerRunner, ConsumerSettings, Subscription, prune_inbox
from shared.db import TRANSIENT_DB_ERRORS, Migration, create_pool, migrate
from shared.events import ServiceHeartbeat
from shared.injection import inject
from shared.logging import configure_logging
from shared.loops import Backoff, every
from shared.metrics import sample_queue_depths
from shared.outbox import OutboxRelay
from shared.probes import start_probe_server
from shared.services import event_source

log = structlog.get_logger(__name__)
# Seconds cancelled background tasks get to end when the service stops.
STOP_TASKS_GRACE = 5.0

Clock = Callable[[], datetime]
_T = TypeVar("_T")
# A background loop: its name (in logs and heartbeats) and how to start it (again).
Loops = dict[str, Callable[[], Awaitable[None]]]

TRANSIENT_ERRORS = (*TRANSIENT_DB_ERRORS, *TRANSIENT_BUS_ERRORS)
LOOP_RESTART_FIRST = 0.5  # seconds before the first restart of a failed loop; doubles after
LOOP_RESTART_MAX = 30.0
LOOP_GIVE_UP_AFTER = 6  # failures in a row (other than outages) before the process exits
LOOP_HEALTHY_AFTER = 60.0  # seconds a loop must run for its failures to be forgiven


def utcnow() -> datetime:
    return datetime.now(UTC)


STARTUP_PATIENCE = 60.0  # seconds to wait for RabbitMQ/PostgreSQL at start before giving up


@dataclass(frozen=True)
class Parts:
    """What a service adds to its runtime once the pool and the bus exist: its handlers'
    dependencies by name (besides ``clock`` and ``settings``, which every handler may ask for)
    and its own background loops."""

    dependencies: Mapping[str, object] = field(default_factory=dict)
    loops: Loops = field(default_factory=dict)


def no_parts(_runtime: ServiceRuntime) -> Parts:
    return Parts()


@dataclass
class ServiceRuntime:
    """Owns the pool, the bus and the background tasks of one service process."""

    service: str
    settings: ServiceSettings
    migrations: list[Migration]
    subscriptions: Sequence[Subscription] = ()
    wire: Callable[[ServiceRuntime], Parts] = no_parts
    clock: Clock = utcnow
    started_at: datetime = field(default_factory=utcnow)
    # The probe listener (shared/probes.py); off for a service with HTTP of its own (gateway).
    probes: bool = True

    pool: asyncpg.Pool = field(init=False)
    bus: Bus = field(init=False)
    outbox: OutboxRelay = field(init=False)
    consumers: ConsumerRunner | None = field(default=None, init=False)
    # Loops down right now (waiting to be restarted); set when one gave up for good.
    failing: set[str] = field(default_factory=set, init=False)
    fatal: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list, init=False)
    _stopped: bool = field(default=False, init=False)
    _probe_server: asyncio.Server | None = field(default=None, init=False)

    async def __aenter__(self) -> ServiceRuntime:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        s = self.settings
        if self.probes:
            self._probe_server = await start_probe_server(
                s.probe_host, s.probe_port, alive=self.liveness, ready=self.readiness
            )
            log.info("probe_listener_started", port=self.probe_port)
        self.pool = await _patiently(
            "database",
            lambda: create_pool(s.database_url, self.service, max_size=s.db_pool_size),
        )
        await migrate(self.pool, self.service, self.migrations)
        self.bus = Bus(s.amqp_url, source=event_source(self.service))
        await _patiently("bus", self.bus.connect)
        self.outbox = OutboxRelay(
            self.pool, self.bus, schema=self.service, poll_interval=s.outbox_poll_interval
        )
        parts = self.wire(self)
        dependencies = {"clock": self.clock, "settings": s, **parts.dependencies}
        self.consumers = ConsumerRunner(
            service=self.service,
            bus=self.bus,
            pool=self.pool,
            subscriptions=inject(self.subscriptions, dependencies),
            settings=ConsumerSettings(
                prefetch=s.prefetch,
                max_deliveries=s.max_deliveries,
                partitions=s.partitions,
                concurrency=s.consumer_concurrency,
                max_batch=s.consumer_batch,
                connections=s.consumer_connections,
            ),
            on_commit=self.outbox.wake,
        )
        # The broker may go away while queues are declared: attach the rest once it is back.
        await _patiently("bus", self.consumers.start)
        consumers = self.consumers
        loops: Loops = {
            "outbox_relay": self.outbox.run,
            "heartbeat": self._heartbeat,
            "inbox_pruning": self._prune_inbox,
            "queue_sampling": self._sample_queues,
            "partition_balancing": lambda: balance_forever(
                self.pool,
                consumers,
                replica=s.replica_id,
                interval=s.heartbeat_interval,
                clock=self.clock,
            ),
            **parts.loops,
        }
        for name, start in loops.items():
            self._tasks.append(asyncio.create_task(self._supervise(name, start), name=name))
        log.info("service_started", replica=s.replica_id)

    async def stop(self) -> None:
        """Stop taking messages, finish in-flight work within the grace period, then close.

        Safe to call more than once; later calls do nothing."""
        if self._stopped:
            return
        self._stopped = True
        log.info("service_stopping")
        if self.consumers is not None:
            await self.consumers.stop(timeout=self.settings.shutdown_grace)
        for task in self._tasks:
            task.cancel()
        await _cancelled_within(self._tasks, STOP_TASKS_GRACE)
        # A stop may come before start() finished: close only what was opened.
        if hasattr(self, "bus"):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.bus.close(), 2)
        if hasattr(self, "pool"):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.pool.close(), 2)
        if self._probe_server is not None:
            self._probe_server.close()
        log.info("service_stopped")

    @property
    def probe_port(self) -> int | None:
        """The port the probe listener took (BOREAS_PROBE_PORT, or the free one 0 found)."""
        if self._probe_server is None:
            return None
        return int(self._probe_server.sockets[0].getsockname()[1])

    def liveness(self) -> dict[str, object]:
        """Alive unless a background loop gave up (the process is about to exit)."""
        if self.fatal.is_set():
            return {"alive": False, "failing": sorted(self.failing)}
        return {"alive": True}

    async def readiness(self) -> dict[str, bool]:
        """Whether the database and the bus answer; neither before the start connected them,
        nor once the service is stopping."""
        live = not self._stopped
        database = live and hasattr(self, "pool") and await self.database_ready()
        bus = live and hasattr(self, "bus") and self.bus.is_connected
        return {"database": database, "bus": bus}

    async def database_ready(self) -> bool:
        try:
            async with asyncio.timeout(2):
                await self.pool.fetchval("SELECT 1")
        except TRANSIENT_DB_ERRORS:  # a timeout among them
            return False
        return True

    async def _heartbeat(self) -> NoReturn:
        interval = self.settings.heartbeat_interval
        await every(
            interval,
            self._send_heartbeat,
            name="heartbeat",
            log=log,
            event="heartbeat_not_sent",
            # Whatever failed (the bus away, mostly), the missing heartbeat is the signal: the
            # next one goes at the usual time, neither sooner nor later.
            transient=(Exception,),
            backoff=Backoff(first=interval, ceiling=interval),
        )

    async def _send_heartbeat(self) -> None:
        await self.bus.publish(
            ServiceHeartbeat(
                service=self.service,
                replica=self.settings.replica_id,
                started_at=self.started_at,
                sent_at=self.clock(),
                failing=sorted(self.failing),
            ),
            # A heartbeat older than a few intervals says nothing about now: let it expire in
            # queues rather than revive a dead service when a backlog drains.
            expiration=3 * self.settings.heartbeat_interval,
            mandatory=False,  # nobody listening (no gateway yet) is no error worth a log
        )

    async def _sample_queues(self) -> NoReturn:
        consumers = self.consumers
        assert consumers is not None

        async def step() -> None:
            queues = [s.queue_name for c in consumers.consumers for s in c.sources]
            await sample_queue_depths(self.bus.connection, self.service, queues)

        await every(
            3 * self.settings.heartbeat_interval,
            step,
            name="queue_sampling",
            log=log,
            event="queue_sampling_skipped",
            # A depth not sampled is a gap in a graph, never a reason to restart the service.
            transient=(Exception,),
        )

    async def _prune_inbox(self) -> NoReturn:
        retention = timedelta(days=self.settings.inbox_retention_days)

        async def step() -> None:
            await prune_inbox(self.pool, handled_before=self.clock() - retention)

        await every(3600, step, name="inbox_pruning", log=log)

    async def _supervise(self, name: str, start: Callable[[], Awaitable[None]]) -> None:
        """Run a loop for ever: restart it after a failure, give up (exit) if it keeps failing."""
        loop = asyncio.get_running_loop()
        failures = 0
        while True:
            began = loop.time()
            outage = False
            try:
                await start()
                log.error("background_loop_returned", loop=name)
            except asyncio.CancelledError:
                raise
            except TRANSIENT_ERRORS as exc:
                outage = True
                log.warning("background_loop_interrupted", loop=name, error=repr(exc))
            except Exception:
                log.exception("background_loop_died", loop=name)
            if loop.time() - began > LOOP_HEALTHY_AFTER:
                failures = 0
            failures += 1
            if not outage and failures >= LOOP_GIVE_UP_AFTER:
                log.error("background_loop_gave_up", loop=name, failures=failures)
                self.failing.add(name)
                self.fatal.set()
                return
            delay = min(LOOP_RESTART_MAX, LOOP_RESTART_FIRST * 2 ** (failures - 1))
            self.failing.add(name)
            await asyncio.sleep(delay)
            self.failing.discard(name)
            log.info("background_loop_restarted", loop=name, failures=failures)


async def _patiently(what: str, attempt: Callable[[], Awaitable[_T]]) -> _T:
    """``attempt`` until it succeeds, waiting 0.5 s, doubling, at most 5 s between tries; after
    STARTUP_PATIENCE seconds the last error is raised."""

    def waiting(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        log.warning("waiting_for_dependency", dependency=what, error=repr(error))

    retrying = tenacity.AsyncRetrying(
        stop=tenacity.stop_after_delay(STARTUP_PATIENCE),
        wait=tenacity.wait_exponential(multiplier=0.5, max=5),
        before_sleep=waiting,
        reraise=True,
    )

    # tenacity awaits only coroutine functions; ``attempt`` may be a lambda returning an awaitable.
    async def once() -> _T:
        return await attempt()

    return await retrying(once)


async def run_until_signalled(runtime: ServiceRuntime) -> int:
    """Run a worker service until SIGTERM or SIGINT, then stop it cleanly; returns the exit
    status: 0, or 1 when a background loop gave up.

    A signal that arrives while the service still waits for RabbitMQ or PostgreSQL ends the wait.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    starting = asyncio.create_task(runtime.start())
    signalled = asyncio.create_task(stop.wait())
    gave_up = asyncio.create_task(runtime.fatal.wait())
    try:
        await asyncio.wait({starting, signalled}, return_when=asyncio.FIRST_COMPLETED)
        if starting.done():
            starting.result()  # a failed start raises here
            await asyncio.wait({signalled, gave_up}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (starting, signalled, gave_up):
            task.cancel()
        await asyncio.gather(starting, signalled, gave_up, return_exceptions=True)
        await runtime.stop()
    return 1 if runtime.fatal.is_set() else 0


def serve(runtime: ServiceRuntime) -> None:
    """Entry point of a worker service's ``__main__``: run it until signalled."""
    configure_logging(runtime.service, runtime.settings.log_level)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        sys.exit(runner.run(run_until_signalled(runtime)))


async def _cancelled_within(tasks: list[asyncio.Task], grace: float) -> None:
    """Wait at most ``grace`` seconds for cancelled ``tasks`` to end: a stop must finish, and a
    task that does not end (stuck in a library call that shields itself) is named in the log."""
    if not tasks:
        return
    _done, pending = await asyncio.wait(tasks, timeout=grace)
    if pending:
        log.warning("tasks_did_not_stop", tasks=sorted(t.get_name() for t in pending))
