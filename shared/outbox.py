"""Transactional outbox: an event commits with the state change it describes, then is published.

``add_to_outbox`` (or ``add_envelopes`` for many) writes on the caller's connection, inside the
caller's transaction, so a rollback discards the event with the state change. ``OutboxRelay``
publishes committed rows in order: a batch at a time, all of its publishes in flight together,
then it waits for every publisher confirm and deletes the confirmed rows. A crash between commit
and publish delays the event and never loses it; a crash between confirm and delete publishes it
again (at-least-once), which consumers absorb through their inbox.

Only one relay per schema publishes at a time (a transaction-scoped advisory lock), so events
leave in the order they were committed even with several replicas. Producers wake their own
process's relay after they commit (:meth:`OutboxRelay.wake`, or commit through
:meth:`OutboxRelay.transaction`); the relay also polls, for rows whose producer died before
waking it. Nothing is signalled inside the transaction, so concurrent commits do not queue on a
shared lock the way ``NOTIFY`` makes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Iterable
from typing import Protocol

import asyncpg
import structlog

from shared.db import TRANSIENT_DB_ERRORS
from shared.events import Envelope, Event
from shared.metrics import OUTBOX_OLDEST, OUTBOX_ROWS

log = structlog.get_logger(__name__)

BATCH = 500


class EnvelopePublisher(Protocol):
    async def publish_envelope(self, envelope: Envelope) -> None: ...


def _require_transaction(conn: asyncpg.Connection) -> None:
    if not conn.is_in_transaction():
        raise RuntimeError("the outbox must be written inside the transaction of the state change")


async def add_to_outbox(
    conn: asyncpg.Connection,
    event: Event,
    *,
    source: str,
    correlation_id: str | None = None,
) -> Envelope:
    """Queue ``event`` for publication when the surrounding transaction commits."""
    envelope = Envelope.wrap(event, source=source, correlation_id=correlation_id)
    await add_envelopes(conn, [envelope])
    return envelope


async def add_envelopes(conn: asyncpg.Connection, envelopes: Iterable[Envelope]) -> None:
    """Queue several events in one statement, in the given order."""
    _require_transaction(conn)
    envelopes = list(envelopes)
    if not envelopes:
        return
    await conn.execute(
        # ORDER BY the ordinality: seq follows the list's order.
        """INSERT INTO outbox (event_id, topic, envelope)
           SELECT event_id, topic, envelope
           FROM unnest($1::uuid[], $2::text[], $3::jsonb[]) WITH ORDINALITY
                AS e(event_id, topic, envelope, n)
           ORDER BY n""",
        [e.id for e in envelopes],
        [e.topic for e in envelopes],
        [e.model_dump_json(exclude_none=True) for e in envelopes],
    )


class OutboxRelay:
    """Publishes the outbox of one schema; run one per process, ``run()`` until cancelled."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        publisher: EnvelopePublisher,
        *,
        schema: str,
        poll_interval: float = 1.0,
    ) -> None:
        self._pool = pool
        self._publisher = publisher
        self._schema = schema
        self._poll_interval = poll_interval
        self._wakeup = asyncio.Event()
        self._measured_at = -math.inf

    def wake(self) -> None:
        """Something was committed to the outbox: publish it now rather than at the next poll."""
        self._wakeup.set()

    @contextlib.asynccontextmanager
    async def transaction(self, conn: asyncpg.Connection) -> AsyncIterator[asyncpg.Connection]:
        """A transaction on ``conn`` after whose commit the relay is woken."""
        async with conn.transaction():
            yield conn
        self.wake()

    async def run(self) -> None:
        while True:
            self._wakeup.clear()
            try:
                while await self.publish_pending():
                    pass
            except TRANSIENT_DB_ERRORS as exc:
                log.warning("outbox_database_unavailable", error=repr(exc))
            except Exception as exc:  # the bus is away: rows stay, try again later
                log.warning("outbox_publish_failed", error=repr(exc))
            await self._measure()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self._poll_interval)

    async def _measure(self) -> None:
        """The outbox's depth and its oldest row's age, for the metrics: at most once per poll
        interval (commits wake the relay far more often), and whether publishing works or not."""
        now = time.monotonic()
        if now - self._measured_at < self._poll_interval:
            return
        self._measured_at = now
        try:
            async with asyncio.timeout(2):
                row = await self._pool.fetchrow(
                    """SELECT count(*) AS n,
                              coalesce(extract(epoch FROM now() - min(created_at)), 0) AS age
                       FROM outbox"""
                )
        except TRANSIENT_DB_ERRORS:
            return  # publishing has said so already; the gauges keep their last values
        OUTBOX_ROWS.labels(self._schema).set(row["n"])
        OUTBOX_OLDEST.labels(self._schema).set(float(row["age"]))

    async def publish_pending(self) -> int:
        """Publish one batch; returns how many rows were published (0 when idle or not our turn)."""
        async with self._pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval(
                "SELECT pg_try_advisory_xact_lock(hashtext('boreas.outbox.' || $1))", self._schema
            ):
                return 0
            rows = await conn.fetch("SELECT seq, envelope FROM outbox ORDER BY seq LIMIT $1", BATCH)
            if not rows:
                return 0
            # All in flight at once; the channel writes them in this order (aiormq's publish lock
            # is first come, first served), so the broker receives them in commit order.
            outcomes = await asyncio.gather(
                *(
                    self._publisher.publish_envelope(Envelope.model_validate_json(r["envelope"]))
                    for r in rows
                ),
                return_exceptions=True,
            )
            confirmed = [r["seq"] for r, o in zip(rows, outcomes, strict=True) if o is None]
            # Delete what the broker confirmed, even when another publish in the batch failed.
            if confirmed:
                await conn.execute("DELETE FROM outbox WHERE seq = ANY($1::bigint[])", confirmed)
        failure = next((o for o in outcomes if isinstance(o, BaseException)), None)
        if failure is not None:
            raise failure
        return len(confirmed)
