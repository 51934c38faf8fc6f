"""The webhook delivery worker: claims due deliveries, signs and sends them, records the outcome.

Claims are shared out among the webhooks' owners (``fairness.share_out``): each owner has at
most ``BOREAS_WEBHOOK_CONCURRENCY_PER_OWNER`` requests in flight on a replica, below the
replica's ``BOREAS_WEBHOOK_CONCURRENCY``, so one owner's slow receivers never take every slot.
No transaction is open while a request is: the lease on the row is what holds it.

Each attempt's outcome is written in one transaction with its ``webhook.delivery_attempted``
report (outbox), so the delivery log the gateway serves never misses an attempt. Delivery is
at-least-once: a replica that dies mid-request leaves its lease to expire and another replica
sends again, so receivers dedupe on ``webhook-id`` (the CloudEvent id) as the spec asks.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import asyncpg
import httpx
import structlog

from services.notifier import SOURCE, fairness, repository
from services.notifier.repository import Claimed
from services.notifier.retry import RetryPolicy, Verdict, judge
from shared import tracing
from shared.config import NotifierSettings
from shared.credentials import (
    WEBHOOK,
    WEBHOOK_URL,
    CredentialCipher,
    CredentialsUnreadable,
)
from shared.db import TRANSIENT_DB_ERRORS, listen_forever
from shared.events import (
    CLOUDEVENTS_CONTENT_TYPE,
    DeliveryOutcome,
    WebhookDeliveryAttempted,
    WebhookDisabled,
)
from shared.loops import Backoff, every
from shared.metrics import WEBHOOK_DELIVERIES
from shared.outbox import add_to_outbox
from shared.redaction import redact_urls_in
from shared.runtime import Clock, utcnow
from shared.webhooks import signing, targets

log = structlog.get_logger(__name__)

USER_AGENT = "Boreas-Webhooks/1"
POLL_SECONDS = 0.5
TIDY_SECONDS = 60.0
# Claims retried 1 s after the database is lost, doubling to 5 s: delivery resumes soon after.
DATABASE_BACKOFF = Backoff(first=1.0, ceiling=5.0)
FINISHED_RETENTION = timedelta(days=7)
MAX_ERROR_LENGTH = 300


@dataclass(frozen=True)
class Answer:
    status_code: int | None
    error: str | None
    duration_ms: int


@dataclass
class WebhookDeliverer:
    pool: asyncpg.Pool
    cipher: CredentialCipher
    settings: NotifierSettings
    clock: Clock = utcnow
    random: Callable[[], float] = random.random
    transport: httpx.AsyncBaseTransport | None = None  # tests may route requests elsewhere
    on_commit: Callable[[], None] = lambda: None  # wakes the outbox relay
    _resolver: targets.Resolver = field(default_factory=targets.Resolver, init=False)
    _wake: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    # Each request in flight on this replica, with its webhook's owner (for fairness.share_out).
    _in_flight: dict[asyncio.Task[None], str] = field(default_factory=dict, init=False)

    @functools.cached_property
    def policy(self) -> RetryPolicy:
        s = self.settings
        return RetryPolicy(s.webhook_retry_first, s.webhook_retry_max, s.webhook_retry_horizon)

    async def run(self) -> None:
        listener = asyncio.create_task(
            listen_forever(self.pool, repository.WAKE_CHANNEL, self._on_notify, POLL_SECONDS)
        )
        housekeeping = asyncio.create_task(
            every(TIDY_SECONDS, self._tidy, name="webhook_tidying", log=log)
        )
        clients = {
            "http": self._client(keep_alive=True),
            # The pool keys connections by address, not by name: a kept TLS connection could
            # carry another host's request past the certificate check made for the first.
            "https": self._client(keep_alive=False),
        }

        async def claim_and_start() -> float:
            """Start what is due; returns how long to wait for a wake-up (none if any started)."""
            self._wake.clear()
            try:
                return 0 if await self._start_due(clients) else POLL_SECONDS
            except TRANSIENT_DB_ERRORS:
                raise  # every() logs it and backs off
            except Exception:  # a bad row: log it, keep delivering the rest
                log.exception("webhook_claim_failed")
                return POLL_SECONDS

        try:
            await every(
                POLL_SECONDS,
                claim_and_start,
                name="webhook_delivery",
                log=log,
                event="webhook_claim_failed",
                backoff=DATABASE_BACKOFF,
                wait=self._woken_within,
            )
        finally:
            for task in (listener, housekeeping, *self._in_flight):
                task.cancel()
            await asyncio.gather(listener, housekeeping, *self._in_flight, return_exceptions=True)
            for client in clients.values():
                await client.aclose()
            self._resolver.close()

    def _client(self, *, keep_alive: bool) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=self.transport,
            timeout=self.settings.webhook_timeout,
            limits=httpx.Limits(max_keepalive_connections=None if keep_alive else 0),
            follow_redirects=False,  # a redirect could lead anywhere, the checks notwithstanding
            trust_env=False,  # a proxy would connect to the name, not the checked address
            headers={"user-agent": USER_AGENT},
        )

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def _woken_within(self, timeout: float) -> None:
        if timeout > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _start_due(self, clients: dict[str, httpx.AsyncClient]) -> int:
        room = self.settings.webhook_concurrency - len(self._in_flight)
        if room <= 0:
            return 0
        per_owner = self.settings.webhook_owner_limit()
        in_flight = Counter(self._in_flight.values())
        now = self.clock()
        candidates = await repository.due(
            self.pool,
            now=now,
            per_webhook=self.settings.webhook_concurrency_per_endpoint,
            per_owner=min(per_owner, room),  # no owner can be given more than that
            skip_owners=[owner for owner, busy in in_flight.items() if busy >= per_owner],
        )
        chosen = fairness.share_out(candidates, in_flight=in_flight, per_owner=per_owner, room=room)
        if not chosen:
            return 0
        claimed = await repository.lease(
            self.pool,
            [c.id for c in chosen],
            now=now,
            lease_until=now + timedelta(seconds=self.settings.webhook_timeout + 30),
        )
        for delivery in claimed:
            task = asyncio.create_task(self._deliver(clients, delivery))
            self._in_flight[task] = delivery.owner
            task.add_done_callback(self._finished)
        return len(claimed)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(task, None)
        self._wake.set()  # a slot is free, and the next delivery of that key may be due
        if not task.cancelled() and task.exception() is not None:
            log.error("webhook_delivery_crashed", error=repr(task.exception()))

    async def _deliver(self, clients: dict[str, httpx.AsyncClient], delivery: Claimed) -> None:
        # The event's trace, from the body the delivery row keeps: its attempts and their
        # reports belong to what caused the event.
        with tracing.continued(tracing.traceparent_in(delivery.body), "webhook deliver"):
            attempted_at = self.clock()
            try:
                answer = await self.send(clients, delivery, attempted_at)
            except Exception as exc:  # whatever it was, it is this attempt's failure, on record
                log.exception("webhook_send_crashed", webhook_id=str(delivery.webhook_id))
                answer = Answer(None, f"{type(exc).__name__} while sending"[:MAX_ERROR_LENGTH], 0)
            try:
                await self.record(delivery, answer, attempted_at)
            except TRANSIENT_DB_ERRORS as exc:
                # The lease runs out and the delivery is attempted again: at-least-once.
                log.warning("webhook_outcome_not_recorded", error=repr(exc))

    async def send(
        self, clients: dict[str, httpx.AsyncClient], delivery: Claimed, now: datetime
    ) -> Answer:
        started = time.monotonic()

        def answer(status: int | None = None, error: str | None = None) -> Answer:
            elapsed = int((time.monotonic() - started) * 1000)
            # The delivery log is the owner's, but travels in events and logs: no query token.
            shown = redact_urls_in(error)[:MAX_ERROR_LENGTH] if error else None
            return Answer(status, shown, elapsed)

        try:
            secrets = self._secrets(delivery, now)
            target = targets.parse_target(self._url(delivery))
        except (targets.TargetRefused, CredentialsUnreadable) as exc:
            return answer(error=str(exc))
        body = delivery.body.encode()
        headers = {
            **signing.headers(secrets, delivery.message_id, int(now.timestamp()), body),
            "content-type": CLOUDEVENTS_CONTENT_TYPE,
            "host": target.host_header,
            **tracing.headers(),
        }
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        try:
            # One deadline for the whole attempt: resolving, connecting, sending, the status line.
            async with asyncio.timeout(self.settings.webhook_timeout):
                allowed = self.settings.webhook_networks()
                address = (await targets.resolve(target, allowed, self._resolver))[0]
                client = clients[target.scheme]
                request = client.build_request(
                    "POST",
                    target.url_at(address),
                    content=body,
                    headers=headers,
                    extensions=extensions,
                )
                response = await client.send(request, stream=True)
                await response.aclose()  # the status is the answer; the body is not read
        except targets.TargetRefused as exc:
            return answer(error=str(exc))
        except TimeoutError:
            return answer(error=f"no answer within {self.settings.webhook_timeout:g} s")
        except httpx.HTTPError as exc:
            return answer(error=f"{type(exc).__name__}: {exc}".rstrip(": "))
        if 300 <= response.status_code < 400:
            return answer(response.status_code, "redirects are not followed")
        return answer(response.status_code)

    def _url(self, delivery: Claimed) -> str:
        if delivery.sealed_url is None:
            return delivery.url
        sealed = delivery.sealed_url
        return self.cipher.open(str(delivery.webhook_id), sealed, purpose=WEBHOOK_URL)["url"]

    def _secrets(self, delivery: Claimed, now: datetime) -> list[str]:
        secrets = [
            self.cipher.open(
                str(delivery.webhook_id),
                s.sealed,
                purpose=WEBHOOK,
            )["secret"]
            for s in delivery.secrets
            if s.expires_at is None or s.expires_at > now
        ]
        if not secrets:
            raise CredentialsUnreadable("the webhook has no signing secret in force")
        return secrets

    async def record(self, delivery: Claimed, answer: Answer, attempted_at: datetime) -> None:
        verdict = judge(answer.status_code)
        now = self.clock()
        next_at = None
        if verdict is Verdict.FAILED:
            next_at = self.policy.next_attempt(
                attempts=delivery.attempts + 1,
                created_at=delivery.created_at,
                now=now,
                random=self.random,
            )
        outcome: DeliveryOutcome
        async with self.pool.acquire() as conn, conn.transaction():
            if verdict is Verdict.DELIVERED:
                outcome, kept = (
                    "delivered",
                    await repository.finish(conn, delivery.id, "delivered", now),
                )
            elif verdict is Verdict.GONE:
                outcome, kept = (
                    "disabled",
                    await repository.finish(conn, delivery.id, "dropped", now),
                )
                if kept:
                    await self._disable(conn, delivery, now)
            elif next_at is None:
                outcome, kept = (
                    "gave_up",
                    await repository.finish(conn, delivery.id, "gave_up", now),
                )
            else:
                outcome, kept = "retrying", await repository.postpone(conn, delivery.id, next_at)
            if not kept:
                return  # the webhook was deleted meanwhile: no log to keep
            await add_to_outbox(
                conn,
                WebhookDeliveryAttempted(
                    webhook_id=delivery.webhook_id,
                    owner=delivery.owner,
                    message_id=delivery.message_id,
                    message_topic=delivery.topic,
                    attempt=delivery.attempts + 1,
                    outcome=outcome,
                    status_code=answer.status_code,
                    error=answer.error,
                    duration_ms=answer.duration_ms,
                    attempted_at=attempted_at,
                    next_attempt_at=next_at,
                ),
                source=SOURCE,
                correlation_id=delivery.message_id,
            )
        self.on_commit()
        WEBHOOK_DELIVERIES.labels(outcome).inc()
        log.info(
            "webhook_attempt",
            webhook_id=str(delivery.webhook_id),
            message_id=delivery.message_id,
            attempt=delivery.attempts + 1,
            outcome=outcome,
            status_code=answer.status_code,
            error=answer.error,
        )

    async def _disable(self, conn: asyncpg.Connection, delivery: Claimed, now: datetime) -> None:
        revision = await repository.disable(conn, delivery.webhook_id)
        if revision is None:
            return
        dropped = await repository.drop_pending(conn, delivery.webhook_id, now)
        await add_to_outbox(
            conn,
            WebhookDisabled(
                webhook_id=delivery.webhook_id,
                owner=delivery.owner,
                revision=revision,
                reason="the endpoint answered 410 Gone",
                disabled_at=now,
                dropped=dropped,
            ),
            source=SOURCE,
        )

    async def _tidy(self) -> None:
        now = self.clock()
        try:
            await repository.tidy(self.pool, now=now, finished_before=now - FINISHED_RETENTION)
        except TRANSIENT_DB_ERRORS:
            raise  # every() logs it and backs off
        except Exception:  # no supervisor watches this task of run(): log, try next round
            log.exception("webhook_tidy_failed")
