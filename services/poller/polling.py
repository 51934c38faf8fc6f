"""The polling loop: claim due accounts, list each once, publish every state change.

Cost follows change. An account is polled at its fast interval while something on it changes (an
instance in transition, an action asked for and not yet seen), and at its idle interval when
everything is settled (still often enough to see nodes that die or change outside Boreas). A
placement or an action pokes its account, so the next poll comes within the fast interval. A
quiet poll reads and writes one row: it locks nothing and publishes nothing.

Each account's health (``provider_account.health_reported``) is published in the transaction
that records a poll's outcome: on every failure, on the success that ends them, and otherwise on
a success at most every ``HEALTH_REPORT_SECONDS`` (:mod:`services.poller.health`).
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import structlog

from services.poller import SOURCE, repository
from services.poller.diff import FINAL, Seen, Transition, changing, diff
from services.poller.health import describe_failure, health_due
from services.poller.repository import Followed, PolledAccount
from shared import tracing
from shared.clouds.connections import CloudConnections
from shared.clouds.registry import boreas_instance_of, boreas_state
from shared.config import PollerSettings
from shared.containment import failing_alone
from shared.db import TRANSIENT_DB_ERRORS
from shared.events import Envelope, InstanceState, InstanceStateChanged, ProviderAccountHealth
from shared.loops import Backoff, every
from shared.metrics import POLL_SECONDS, POLLS
from shared.outbox import add_envelopes, add_to_outbox
from shared.runtime import Clock

log = structlog.get_logger(__name__)

# Claims retried 1 s after the database is lost, doubling to 5 s: polling resumes soon after.
DATABASE_BACKOFF = Backoff(first=1.0, ceiling=5.0)


def retry_delay(
    interval: float, failures: int, ceiling: float, rand: Callable[[], float] = random.random
) -> float:
    """Exponential backoff with jitter: half to all of min(ceiling, interval * 2**failures)."""
    return min(ceiling, interval * 2**failures) * (0.5 + rand() / 2)


def _expecting_change(
    followed: Iterable[Followed], states: Mapping[str, str], now: datetime
) -> bool:
    """Whether an action was asked for whose effect has not shown yet: an action's effect shows
    as a transition, so an instance still in its followed state is still expected to change."""
    return any(
        f.expect_change_until is not None
        and f.expect_change_until > now
        and states[f.instance_id] == f.state
        for f in followed
    )


class Poller:
    def __init__(
        self,
        pool: asyncpg.Pool,
        clouds: CloudConnections,
        settings: PollerSettings,
        clock: Clock,
        on_commit: Callable[[], None] = lambda: None,
    ) -> None:
        self._pool = pool
        self._clouds = clouds
        self._settings = settings
        self._clock = clock
        self._on_commit = on_commit
        self._in_flight: dict[asyncio.Task[None], str] = {}  # polls under way: their accounts
        self._slot_freed = asyncio.Event()
        self.list_calls = 0  # provider list calls made (for benchmarks and tests)

    async def run(self) -> None:
        tick = min(0.25, self._settings.poll_interval / 4)
        pruned_at = self._clock()

        async def claim_and_start() -> float:
            """Start polling what is due; returns how long to wait for a slot to free."""
            nonlocal pruned_at
            free = self._settings.poll_concurrency - len(self._in_flight)
            if free <= 0:
                return math.inf  # every slot busy: wait for one
            async with self._pool.acquire() as conn:
                claimed = await repository.claim_due_accounts(
                    conn,
                    now=self._clock(),
                    default_interval=self._settings.poll_interval,
                    limit=free,
                )
            for account in claimed:
                task = asyncio.create_task(self._poll_logged(account))
                self._in_flight[task] = account.id
                task.add_done_callback(self._finished)
            if self._clock() - pruned_at > timedelta(hours=1):
                await repository.prune_polls(self._pool, self._clock())
                pruned_at = self._clock()
            # Nothing more due now: wait for a slot or the next tick. Else claim on at once.
            return tick if len(claimed) < free else 0

        try:
            await every(
                tick,
                claim_and_start,
                name="polling",
                log=log,
                event="poller_database_unavailable",
                backoff=DATABASE_BACKOFF,
                wait=self._slot_freed_within,
            )
        finally:
            cut_short = list(self._in_flight.values())
            for task in list(self._in_flight):
                task.cancel()
            await asyncio.gather(*self._in_flight, return_exceptions=True)
            await self._release(cut_short)

    async def _slot_freed_within(self, timeout: float) -> None:
        """Wait until a poll ends, or at most ``timeout`` seconds (no limit when infinite)."""
        if timeout <= 0:
            return
        self._slot_freed.clear()
        waiting = asyncio.create_task(self._slot_freed.wait())
        await asyncio.wait({waiting}, timeout=None if math.isinf(timeout) else timeout)
        waiting.cancel()

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(task, None)
        self._slot_freed.set()

    async def _poll_logged(self, account: PolledAccount) -> None:
        with (
            structlog.contextvars.bound_contextvars(account_id=account.id),
            failing_alone(log, not_recorded="poll_not_recorded", crashed="poll_crashed"),
        ):
            try:
                await self.poll_account(account)
            except Exception:
                await self._release([account.id])  # polled again when due, not after the hold
                raise

    async def _release(self, account_ids: list[str]) -> None:
        """Let other replicas poll these accounts at once; if the database is out of reach, the
        claims expire by themselves."""
        if not account_ids:
            return
        try:
            await repository.release(self._pool, account_ids)
        except TRANSIENT_DB_ERRORS as exc:
            log.warning("poll_claims_not_released", accounts=len(account_ids), error=repr(exc))

    async def poll_account(self, account: PolledAccount) -> None:
        """One list call for the whole account; transitions, if any, in one transaction."""
        fast, idle = self._settings.intervals(account.config)
        # What we follow is read before the cloud is asked: an instance placed while the list
        # call is under way may be missing from its answer, and must not be taken for gone.
        followed = await repository.followed(self._pool, account.id)
        began = time.monotonic()
        try:
            self.list_calls += 1
            nodes = await self._clouds.call(
                account, lambda driver: driver.list_nodes(), read_only=True
            )
        except Exception as error:
            await self._back_off(account, error, fast)
            _polled(account.provider, "error", began)
            return
        seen = [Seen(str(n.id), boreas_instance_of(n), boreas_state(n)) for n in nodes]
        now = self._clock()
        result = diff(followed, seen, await self._placed_untagged(account.id, seen))
        states = {f.instance_id: f.state for f in followed}
        if result.transitions:
            states.update(await self._record(result.transitions, now))
        await self._note_unmanaged(account.id, result.unmanaged, now)
        busy = changing(states.values(), _expecting_change(followed, states, now))
        await self._record_success(account, now, busy, fast, idle)
        _polled(account.provider, "ok", began)
        if result.transitions:
            log.info("account_polled", nodes=len(seen), changes=len(result.transitions))

    async def _placed_untagged(self, account_id: str, seen: list[Seen]) -> dict[str, str]:
        """Which live untagged nodes Boreas placed after all (instance id by provider id)."""
        untagged = [
            s.provider_instance_id
            for s in seen
            if s.boreas_instance is None and s.state not in FINAL
        ]
        if not untagged:
            return {}
        return await repository.placed_among(self._pool, account_id, untagged)

    async def _note_unmanaged(
        self, account_id: str, unmanaged: tuple[str, ...], now: datetime
    ) -> None:
        """Warn once about each node found outside Boreas."""
        if not unmanaged:
            return
        for node_id in await repository.newly_unmanaged(
            self._pool, account_id, list(unmanaged), now
        ):
            log.warning("unmanaged_node_found", provider_instance_id=node_id)

    async def _record(self, transitions: tuple[Transition, ...], now: datetime) -> dict[str, str]:
        """Every transition with its event, in one transaction; returns the new states."""
        async with self._pool.acquire() as conn, conn.transaction():
            moved = await repository.move_states(
                conn, [(t.instance_id, t.old_state, t.new_state) for t in transitions], now
            )
            envelopes = [
                Envelope.wrap(
                    InstanceStateChanged(
                        instance_id=m.instance_id,
                        owner=m.owner,
                        account_id=m.account_id,
                        provider=m.provider,
                        provider_instance_id=m.provider_instance_id,
                        old_state=InstanceState(m.old_state),
                        new_state=InstanceState(m.new_state),
                        cpus=m.cpus,
                        memory_mb=m.memory_mb,
                        observed_at=now,
                    ),
                    source=SOURCE,
                    # In the trace of the last request about the instance (placement, action).
                    trace=tracing.event_trace(
                        InstanceStateChanged.TOPIC, tracing.context_of(m.traceparent)
                    ),
                )
                for m in moved
            ]
            await add_envelopes(conn, envelopes)
        if envelopes:
            self._on_commit()
        for m, envelope in zip(moved, envelopes, strict=True):
            log.info(
                "instance_state_seen",
                instance_id=str(m.instance_id),
                old_state=m.old_state,
                new_state=m.new_state,
                **tracing.ids_of(envelope.traceparent),
            )
        return {str(m.instance_id): m.new_state for m in moved}

    async def _record_success(
        self, account: PolledAccount, now: datetime, busy: bool, fast: float, idle: float
    ) -> None:
        polled: dict[str, Any] = {
            "replica": self._settings.replica_id,
            "at": now,
            "changing": busy,
            "fast": fast,
            "idle": idle,
        }
        due = health_due(
            failed=False,
            failures_before=account.failures,
            reported_at=account.health_reported_at,
            now=now,
        )
        if not due:
            # The quiet poll: one statement, no transaction, nothing published.
            await repository.polled(self._pool, account.id, **polled)
            return
        async with self._pool.acquire() as conn, conn.transaction():
            live = await repository.polled(conn, account.id, health_reported=True, **polled)
            if live:
                await add_to_outbox(
                    conn,
                    ProviderAccountHealth(
                        account_id=account.id,
                        last_poll_at=now,
                        last_error=None,
                        consecutive_failures=0,
                    ),
                    source=SOURCE,
                )
        self._on_commit()

    async def _back_off(self, account: PolledAccount, error: Exception, fast: float) -> None:
        delay = retry_delay(fast, account.failures + 1, self._settings.poll_backoff_max)
        text = describe_failure(error, self._credential_values(account))
        now = self._clock()
        async with self._pool.acquire() as conn, conn.transaction():
            failures = await repository.back_off(
                conn,
                account.id,
                until=now + timedelta(seconds=delay),
                error=text,
                reported_at=now,
            )
            await repository.log_poll(conn, account.id, self._settings.replica_id, now, False)
            if failures is not None:
                # last_poll_at is the time of the poll reported, failed or not: the gateway
                # keeps the report about the latest poll, whatever order reports arrive in.
                await add_to_outbox(
                    conn,
                    ProviderAccountHealth(
                        account_id=account.id,
                        last_poll_at=now,
                        last_error=text,
                        consecutive_failures=failures,
                    ),
                    source=SOURCE,
                )
        self._on_commit()
        log.warning("poll_failed", error=text, retry_in=round(delay, 1))

    def _credential_values(self, account: PolledAccount) -> list[str]:
        """The account's credentials in clear (in memory only), so a cloud's error message that
        echoes one is redacted; none if they do not open (that may be the very failure)."""
        try:
            opened = self._settings.credential_cipher().open(account.id, account.credentials)
        except Exception:
            return []
        return [value for value in opened.values() if isinstance(value, str)]


def _polled(provider: str, outcome: str, began: float) -> None:
    POLLS.labels(provider, outcome).inc()
    POLL_SECONDS.labels(provider).observe(time.monotonic() - began)
