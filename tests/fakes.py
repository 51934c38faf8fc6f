"""In-memory stand-ins for what handlers are given: units of work, repositories, the worker.

Each fake implements an interface of the product code, never a mock of it (cosmicpython's
FakeRepository and FakeUnitOfWork): the repositories satisfy the Protocols in
``services/<service>/ports.py`` that the real repository modules satisfy too (mypy checks both;
``tests/unit/test_fakes.py`` compares their signatures), and keep the rules of the SQL they stand
for (e.g. a launch is recorded once; only active webhooks get deliveries) so that a handler
tested against a fake behaves as it does against PostgreSQL. The connection a handler passes
on is an opaque token here: the fakes check it is the unit of work's.
"""

from __future__ import annotations

import dataclasses
import itertools
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from services.notifier.repository import Outgoing
from services.quota.accounting import Amounts, Entry, Limits
from services.quota.budget import Costed, Spell
from services.scheduler.placement import Request
from services.scheduler.repository import InstancePlacement, PendingLaunch
from shared.consumer import BatchUnitOfWork, Received, UnitOfWork
from shared.events import Envelope, Event, Lease, WebhookChanged

SOURCE = "boreas/test"


class FakeConnection:
    """What a fake unit of work hands its handler as ``conn``: nothing to call, only passed on."""


@dataclass
class FakeUnitOfWork(UnitOfWork):
    """The real :class:`shared.consumer.UnitOfWork` (how it publishes, what it runs after
    commit) on a :class:`FakeConnection`, with no transaction: :meth:`commit` runs the
    callbacks, and ``published`` keeps the events as the handler gave them."""

    published: list[Event] = field(default_factory=list)

    @classmethod
    def for_event(cls, event: Event, *, conn: Any = None) -> FakeUnitOfWork:
        """The unit of work of ``event`` as delivered, on ``conn`` (a fresh one if None)."""
        return cls(conn or FakeConnection(), Envelope.wrap(event, source=SOURCE), SOURCE)

    async def publish(self, event: Event) -> Envelope:
        self.published.append(event)
        return await super().publish(event)

    def commit(self) -> None:
        for callback in self.committed:
            callback()


@dataclass
class FakeBatchUnitOfWork(BatchUnitOfWork):
    """The real :class:`shared.consumer.BatchUnitOfWork` on a :class:`FakeConnection`, with no
    transaction; ``published`` keeps each event with the message it came of."""

    conn: Any = field(default_factory=FakeConnection)
    source: str = SOURCE
    published: list[tuple[Event, Envelope]] = field(default_factory=list)

    def publish(self, event: Event, *, cause: Envelope) -> Envelope:
        self.published.append((event, cause))
        return super().publish(event, cause=cause)

    @property
    def events(self) -> list[Event]:
        return [event for event, _ in self.published]

    def commit(self) -> None:
        for callback in self.committed:
            callback()


def received(*events: Event) -> list[Received]:
    """A batch as the consumer hands it over: each event with the envelope it came in."""
    return [Received(e, Envelope.wrap(e, source=SOURCE)) for e in events]


@dataclass
class FakeWorker:
    """The cloud worker as handlers see it (:class:`services.scheduler.ports.Waker`)."""

    wakes: int = 0

    def wake(self) -> None:
        self.wakes += 1


class _Connected:
    """A fake repository bound to the connection its unit of work hands out."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def _check(self, conn: Any) -> None:
        assert conn is self.conn, "the handler passed a connection other than its unit of work's"


# -- scheduler ---------------------------------------------------------------------------------


class FakeCallsRepository(_Connected):
    """:class:`services.scheduler.ports.CallsRepository` in memory: placements and the calls
    owed to clouds."""

    def __init__(self, conn: Any) -> None:
        super().__init__(conn)
        self.placements: dict[uuid.UUID, InstancePlacement] = {}
        self.calls: list[dict[str, Any]] = []
        self.locked: list[uuid.UUID] = []
        self.leases: dict[uuid.UUID, Lease | None] = {}  # None: ended
        self._ids = itertools.count(1)

    # What the handlers use.

    async def lock_instance(self, conn: Any, instance_id: uuid.UUID) -> None:
        self._check(conn)
        self.locked.append(instance_id)

    async def placement(self, conn: Any, instance_id: uuid.UUID) -> InstancePlacement | None:
        self._check(conn)
        return self.placements.get(instance_id)

    async def pending_launch(self, conn: Any, instance_id: uuid.UUID) -> PendingLaunch | None:
        self._check(conn)
        for call in self.calls:
            if call["instance_id"] == instance_id and call["action"] == "launch":
                if call["status"] == "pending":
                    return PendingLaunch(call["id"], not call["tried"] and not call["leased"])
        return None

    async def record(self, conn: Any, placement: InstancePlacement) -> None:
        self._check(conn)
        known = self.placements.get(placement.instance_id)
        if known is not None:
            # As the upsert: the owner stays; account and provider id are kept unless given.
            placement = dataclasses.replace(
                placement,
                owner=known.owner,
                account_id=placement.account_id or known.account_id,
                provider_instance_id=placement.provider_instance_id or known.provider_instance_id,
            )
        self.placements[placement.instance_id] = placement

    async def add_call(self, conn: Any, instance_id: uuid.UUID, *, owner: str, action: str) -> None:
        self._check(conn)
        self._add(instance_id, owner, action, None)

    async def add_launch(self, conn: Any, instance_id: uuid.UUID, request: Request) -> None:
        self._check(conn)
        if instance_id in self.placements or self.calls_of(instance_id, "launch"):
            return  # recorded, placed, failed or cancelled already
        self._add(instance_id, request.owner, "launch", request)

    async def cancel_call(self, conn: Any, call_id: int) -> None:
        self._check(conn)
        for call in self.calls:
            if call["id"] == call_id:
                call["status"] = "cancelled"

    async def add_lease(self, conn: Any, instance_id: uuid.UUID, owner: str, lease: Lease) -> None:
        self._check(conn)
        self.leases.setdefault(instance_id, lease)  # kept once; an ended one stays ended

    async def end_lease(self, conn: Any, instance_id: uuid.UUID, owner: str) -> None:
        self._check(conn)
        self.leases[instance_id] = None

    # What tests arrange and look at.

    def _add(
        self, instance_id: uuid.UUID, owner: str, action: str, request: Request | None
    ) -> None:
        self.calls.append(
            {
                "id": next(self._ids),
                "instance_id": instance_id,
                "owner": owner,
                "action": action,
                "request": request,
                "status": "pending",
                "tried": [],
                "leased": False,
            }
        )

    def calls_of(self, instance_id: uuid.UUID, action: str | None = None) -> list[dict[str, Any]]:
        return [
            c
            for c in self.calls
            if c["instance_id"] == instance_id and (action is None or c["action"] == action)
        ]


# -- quota -------------------------------------------------------------------------------------


class FakeDecisionsRepository(_Connected):
    """:class:`services.quota.ports.DecisionsRepository` over dicts: usage (and the cost
    reported with it), limits, the ledger of decided launches (with the launches kept for an
    approval) and the spells tests say they ran."""

    def __init__(self, conn: Any) -> None:
        super().__init__(conn)
        self.usage: dict[str, Amounts] = {}
        self.reported: dict[str, tuple[Decimal, datetime]] = {}
        self.limits: dict[str, Limits] = {}
        self.ledger: dict[str, Entry] = {}
        self.kept: dict[str, dict[str, Any]] = {}
        self.spells: dict[str, tuple[Spell, ...]] = {}

    async def lock_usages(self, conn: Any, owners: list[str]) -> dict[str, Amounts]:
        self._check(conn)
        for owner in owners:
            self.usage.setdefault(owner, Amounts())  # as the insert of a missing usage row
        return {owner: self.usage[owner] for owner in sorted(owners)}

    async def decided_among(self, conn: Any, instance_ids: list[uuid.UUID]) -> set[str]:
        self._check(conn)
        return {str(i) for i in instance_ids if str(i) in self.ledger}

    async def limits_for(self, conn: Any, owners: list[str]) -> dict[str, Limits]:
        self._check(conn)
        return {owner: self.limits[owner] for owner in owners if owner in self.limits}

    async def costing(
        self, conn: Any, owners: list[str] | None, since: datetime
    ) -> dict[str, list[Costed]]:
        self._check(conn)
        found: dict[str, list[Costed]] = {}
        for key, entry in self.ledger.items():
            if entry.price is None or (owners is not None and entry.owner not in owners):
                continue
            # As the query: the spells that had not ended by ``since``; entries that hold or
            # ran since then.
            spells = tuple(
                s for s in self.spells.get(key, ()) if s.ended_at is None or s.ended_at > since
            )
            if entry.holds or spells:
                found.setdefault(entry.owner, []).append(
                    Costed(entry.price, entry.holds, entry.expires_at, spells)
                )
        return found

    async def record_many(
        self, conn: Any, entries: list[Entry], kept: Mapping[uuid.UUID, dict[str, Any]]
    ) -> None:
        self._check(conn)
        for entry in entries:
            # The ledger's primary key: a launch is decided once.
            assert str(entry.instance_id) not in self.ledger, f"{entry.instance_id} decided twice"
            self.ledger[str(entry.instance_id)] = entry
            if entry.instance_id in kept:
                self.kept[str(entry.instance_id)] = kept[entry.instance_id]

    async def set_usages(
        self, conn: Any, usage: dict[str, Amounts], costs: Mapping[str, Decimal], at: datetime
    ) -> None:
        self._check(conn)
        for owner, amounts in usage.items():
            if owner in self.usage:  # an UPDATE: rows lock_usages made
                self.usage[owner] = amounts
                self.reported[owner] = (costs[owner], at)


# -- notifier ----------------------------------------------------------------------------------


class FakeFanOutRepository(_Connected):
    """:class:`services.notifier.ports.FanOutRepository` over dicts: the webhooks known (kept
    by :meth:`remember_webhook`, as the real one) and the deliveries queued."""

    def __init__(self, conn: Any) -> None:
        super().__init__(conn)
        self.webhooks: dict[uuid.UUID, WebhookChanged] = {}
        self.deliveries: list[dict[str, Any]] = []

    async def remember_webhook(self, conn: Any, event: WebhookChanged) -> bool:
        self._check(conn)
        known = self.webhooks.get(event.webhook_id)
        if known is not None and known.revision >= event.revision:
            return False
        self.webhooks[event.webhook_id] = event
        return True

    def _active(self, webhook: WebhookChanged) -> bool:
        return webhook.active and not webhook.deleted

    async def interested(self, conn: Any, owner: str | None) -> list[tuple[uuid.UUID, list[str]]]:
        self._check(conn)
        return [
            (w.webhook_id, list(w.topics))
            for w in self.webhooks.values()
            if self._active(w) and (w.scope == "all" or w.owner == owner)
        ]

    async def add_deliveries(
        self, conn: Any, webhook_ids: list[uuid.UUID], message: Outgoing, *, now: datetime
    ) -> None:
        self._check(conn)
        for webhook_id in webhook_ids:
            webhook = self.webhooks.get(webhook_id)
            if webhook is None or not self._active(webhook):
                continue  # deactivated meanwhile
            if any(
                d["webhook_id"] == webhook_id and d["message_id"] == message.message_id
                for d in self.deliveries
            ):
                continue  # queued already: one delivery per webhook and message
            self.deliveries.append(
                {"webhook_id": webhook_id, **dataclasses.asdict(message), "created_at": now}
            )
