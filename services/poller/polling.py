"""The polling loop: claim due accounts, list each once, publish every state change."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import asyncpg
import structlog

from services.poller import repository
from services.poller.diff import Known, Seen, diff
from shared.clouds.connections import CloudConnections
from shared.clouds.registry import boreas_instance_of, boreas_state
from shared.config import PollerSettings
from shared.db import TRANSIENT_DB_ERRORS
from shared.events import InstanceState, InstanceStateChanged
from shared.outbox import add_to_outbox
from shared.runtime import Clock

log = structlog.get_logger(__name__)

SOURCE = "boreas/poller"


def retry_delay(
    interval: float, failures: int, ceiling: float, rand: Callable[[], float] = random.random
) -> float:
    """Exponential backoff with jitter: half to all of min(ceiling, interval * 2**failures)."""
    return min(ceiling, interval * 2**failures) * (0.5 + rand() / 2)


class Poller:
    def __init__(
        self,
        pool: asyncpg.Pool,
        clouds: CloudConnections,
        settings: PollerSettings,
        clock: Clock,
        on_commit: Callable[[], None] = lambda: None,
    ) -> None:
        self._on_commit = on_commit
        self._pool = pool
        self._clouds = clouds
        self._settings = settings
        self._clock = clock
        self._slots = asyncio.Semaphore(settings.poll_concurrency)

    async def run(self) -> None:
        tick = min(0.25, self._settings.poll_interval / 4)
        pruned_at = self._clock()
        while True:
            try:
                async with self._pool.acquire() as conn:
                    claimed = await repository.claim_due_accounts(
                        conn,
                        now=self._clock(),
                        default_interval=self._settings.poll_interval,
                        limit=2 * self._settings.poll_concurrency,
                    )
                if self._clock() - pruned_at > timedelta(hours=1):
                    await repository.prune_polls(self._pool, self._clock())
                    pruned_at = self._clock()
            except TRANSIENT_DB_ERRORS as exc:
                log.warning("poller_database_unavailable", error=repr(exc))
                await asyncio.sleep(1)
                continue
            if claimed:
                await asyncio.gather(*(self._poll_in_slot(a) for a in claimed))
            else:
                await asyncio.sleep(tick)

    async def _poll_in_slot(self, account: dict[str, Any]) -> None:
        async with self._slots:
            with structlog.contextvars.bound_contextvars(account_id=account["id"]):
                try:
                    await self.poll_account(account)
                except TRANSIENT_DB_ERRORS as exc:
                    log.warning("poll_not_recorded", error=repr(exc))

    async def poll_account(self, account: dict[str, Any]) -> None:
        """One list call for the whole account, then every transition in one transaction."""
        now = self._clock()
        try:
            nodes = await self._clouds.call(account, lambda driver: driver.list_nodes())
        except Exception as error:
            await self._back_off(account, error)
            return
        seen = [Seen(str(n.id), boreas_instance_of(n), boreas_state(n)) for n in nodes]
        async with self._pool.acquire() as conn, conn.transaction():
            rows = {
                str(r["instance_id"]): r for r in await repository.followed(conn, account["id"])
            }
            known = [Known(i, r["provider_instance_id"], r["state"]) for i, r in rows.items()]
            managed = {r["provider_instance_id"]: i for i, r in rows.items()}
            result = diff(known, seen, managed)
            for change in result.transitions:
                row = rows[change.instance_id]
                await repository.set_state(conn, row["instance_id"], change.new_state, now)
                await add_to_outbox(
                    conn,
                    InstanceStateChanged(
                        instance_id=row["instance_id"],
                        owner=row["owner"],
                        account_id=row["account_id"],
                        provider=row["provider"],
                        provider_instance_id=row["provider_instance_id"],
                        old_state=InstanceState(change.old_state),
                        new_state=InstanceState(change.new_state),
                        cpus=row["cpus"],
                        memory_mb=row["memory_mb"],
                        observed_at=now,
                    ),
                    source=SOURCE,
                )
            for node_id in await repository.newly_unmanaged(
                conn, account["id"], list(result.unmanaged), now
            ):
                log.warning("unmanaged_node_found", provider_instance_id=node_id)
            await repository.clear_failures(conn, account["id"])
            await repository.log_poll(conn, account["id"], self._settings.replica_id, now, True)
        if result.transitions:
            self._on_commit()
            log.info("account_polled", nodes=len(seen), changes=len(result.transitions))

    async def _back_off(self, account: dict[str, Any], error: Exception) -> None:
        interval = float(account["config"].get("poll_interval") or self._settings.poll_interval)
        delay = retry_delay(interval, account["failures"] + 1, self._settings.poll_backoff_max)
        text = f"{type(error).__name__}: {str(error)[:200]}"
        async with self._pool.acquire() as conn, conn.transaction():
            await repository.back_off(
                conn, account["id"], until=self._clock() + timedelta(seconds=delay), error=text
            )
            await repository.log_poll(
                conn, account["id"], self._settings.replica_id, self._clock(), False
            )
        log.warning("poll_failed", error=text, retry_in=round(delay, 1))
