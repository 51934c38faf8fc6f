"""Transactional outbox: an event commits with the state change it describes, then is published.

``add_to_outbox`` writes the envelope on the caller's connection, inside the caller's transaction,
so a rollback discards it with the state change. ``OutboxRelay`` publishes committed rows in order
with publisher confirms and deletes each only once the broker has confirmed it, so a crash between
commit and publish delays the event and never loses it; a crash between confirm and delete
publishes it again (at-least-once), which consumers absorb through their inbox.

Only one relay per schema publishes at a time (a transaction-scoped advisory lock), so events leave
in the order they were committed even with several replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

import asyncpg
import structlog

from shared.db import TRANSIENT_DB_ERRORS, listen_forever
from shared.events import Envelope, Event

log = structlog.get_logger(__name__)

_BATCH = 200


class EnvelopePublisher(Protocol):
    async def publish_envelope(self, envelope: Envelope) -> None: ...


async def add_to_outbox(
    conn: asyncpg.Connection,
    event: Event,
    *,
    source: str,
    correlation_id: str | None = None,
) -> Envelope:
    """Queue ``event`` for publication when the surrounding transaction commits."""
    if not conn.is_in_transaction():
        raise RuntimeError("add_to_outbox must run inside the transaction of the state change")
    envelope = Envelope.wrap(event, source=source, correlation_id=correlation_id)
    await conn.execute(
        "INSERT INTO outbox (event_id, topic, envelope) VALUES ($1, $2, $3)",
        envelope.id,
        event.TOPIC,
        envelope.model_dump_json(exclude_none=True),
    )
    # Delivered at commit only: wakes the relay without waiting for its next poll.
    await conn.execute("SELECT pg_notify('boreas_outbox_' || current_schema(), '')")
    return envelope


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
        self._channel = f"boreas_outbox_{schema}"

    async def run(self) -> None:
        listener = asyncio.create_task(
            listen_forever(self._pool, self._channel, self._on_notify, self._poll_interval),
            name=f"outbox-listen-{self._schema}",
        )
        try:
            while True:
                try:
                    while await self.publish_pending():
                        pass
                except TRANSIENT_DB_ERRORS as exc:
                    log.warning("outbox_database_unavailable", error=str(exc))
                except Exception as exc:  # the bus is away: rows stay, try again later
                    log.warning("outbox_publish_failed", error=repr(exc))
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), self._poll_interval)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    async def publish_pending(self) -> int:
        """Publish one batch; returns how many rows were published (0 when idle or not our turn)."""
        failure: Exception | None = None
        published = 0
        async with self._pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval(
                "SELECT pg_try_advisory_xact_lock(hashtext('boreas.outbox.' || $1))", self._schema
            ):
                return 0
            rows = await conn.fetch(
                "SELECT seq, envelope FROM outbox ORDER BY seq LIMIT $1", _BATCH
            )
            for row in rows:
                try:
                    await self._publisher.publish_envelope(
                        Envelope.model_validate_json(row["envelope"])
                    )
                except Exception as exc:
                    failure = exc
                    break
                published += 1
            # Delete what the broker confirmed, even when a later publish in the batch failed.
            if published:
                await conn.execute(
                    "DELETE FROM outbox WHERE seq = ANY($1::bigint[])",
                    [r["seq"] for r in rows[:published]],
                )
        if failure is not None:
            raise failure
        return published

    def _on_notify(self, *_: object) -> None:
        self._wakeup.set()
