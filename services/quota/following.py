"""How instance events move the ledger entries quota decided, and with them usage and cost.

Each batch locks its entries by instance id, applies each event to its entry in order (pure),
writes what changed in bulk, then locks the usage rows of the owners whose usage or cost moved
(in owner order) and publishes one ``quota.usage_changed`` per owner. Every change is
idempotent by the entry's own state, so a redelivered event changes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import structlog

from services.quota import repository
from services.quota.accounting import (
    Amounts,
    Entry,
    Limits,
    after_end,
    after_placement,
    usage_delta,
)
from services.quota.budget import Seen, follow_spells, money
from services.quota.reporting import costs_at, reported, usage_event
from shared.consumer import BatchUnitOfWork, Received
from shared.events import (
    Envelope,
    InstanceApproved,
    InstanceLaunchAdmitted,
    InstanceLaunchRequested,
    InstanceLeaseExtended,
    InstancePlaced,
    InstanceState,
    InstanceStateChanged,
)
from shared.runtime import Clock, utcnow

log = structlog.get_logger(__name__)

# An event's change to its entry: the entry it becomes, or None for no change.
Change = Callable[[Entry, Any], Entry | None]


def placed(entry: Entry, event: InstancePlaced) -> Entry | None:
    """Placed: reserved turns active, and the entry's price becomes the placed one (the
    difference from the admission price is released)."""
    price = entry.price if event.price_per_hour is None else money(event.price_per_hour)
    new = replace(entry, status=after_placement(entry.status) or entry.status, price=price)
    return None if new == entry else new


def ended(entry: Entry, _event: object) -> Entry | None:
    """Failed or terminated: the room is released."""
    status = after_end(entry.status)
    return None if status is None else replace(entry, status=status, awaiting=False)


def extended(entry: Entry, event: InstanceLeaseExtended) -> Entry | None:
    """The lease's end moves; only later (a lease only lengthens), so an older extension
    delivered again changes nothing."""
    if entry.expires_at is not None and entry.expires_at >= event.expires_at:
        return None
    return replace(entry, expires_at=event.expires_at)


def denied(entry: Entry, _event: object) -> Entry | None:
    """A held launch denied (or withdrawn, or timed out): its reservation is released."""
    return ended(entry, None) if entry.awaiting else None


@dataclass
class Moved:
    """What a batch of changes came to: each entry as it ends, the changed ones, each owner's
    usage delta, the owners whose cost moved, and the last event that moved each owner."""

    entries: dict[str, Entry]
    changed: dict[str, Entry] = field(default_factory=dict)
    deltas: dict[str, Amounts] = field(default_factory=dict)
    last_cause: dict[str, Envelope] = field(default_factory=dict)


def _moves_cost(old: Entry, new: Entry) -> bool:
    if old.holds != new.holds:
        return True
    return new.holds and (old.price, old.expires_at) != (new.price, new.expires_at)


def apply(moves: list[tuple[Received, Change]], entries: dict[str, Entry]) -> Moved:
    """Each event's change applied to its ledger entry, in order (pure)."""
    moved = Moved(entries=dict(entries))
    for item, change in moves:
        key = str(item.event.instance_id)
        old = moved.entries.get(key)
        if old is None:
            continue  # not a launch this quota decided (e.g. from before quota existed)
        new = change(old, item.event)
        if new is None:
            continue
        moved.entries[key] = moved.changed[key] = new
        delta = usage_delta(old.status, new.status, old.amounts)
        if delta != Amounts():
            moved.deltas[old.owner] = moved.deltas.get(old.owner, Amounts()) + delta
        if _moves_cost(old, new):
            moved.deltas.setdefault(old.owner, Amounts())
            moved.last_cause[old.owner] = item.envelope
    return moved


async def move(
    uow: BatchUnitOfWork,
    moves: list[tuple[Received, Change]],
    now: datetime,
    entries: dict[str, Entry] | None = None,
) -> None:
    """Apply each event's change to its ledger entry (``entries``, locked already, or locked
    here by instance id), write the changed ones, and move and report the usage and cost of the
    owners concerned (their usage rows locked in owner order)."""
    if entries is None:
        entries = await repository.entries(uow.conn, [r.event.instance_id for r, _ in moves])
    moved = apply(moves, entries)
    await repository.update_entries(uow.conn, list(moved.changed.values()))
    if moved.deltas:
        await _report(uow, moved, now)


async def _report(uow: BatchUnitOfWork, moved: Moved, now: datetime) -> None:
    owners = sorted(moved.deltas)
    usage = await repository.lock_usages(uow.conn, owners)
    after = {o: usage[o] + moved.deltas[o] for o in owners}
    costs = await costs_at(uow.conn, owners, now)
    await repository.set_usages(uow.conn, after, reported(costs), now)
    limits = await repository.limits_for(uow.conn, owners)
    for owner in owners:
        uow.publish(
            usage_event(owner, after[owner], limits.get(owner, Limits()), costs[owner]),
            cause=moved.last_cause[owner],
        )


async def follow_placements(
    received: list[Received], uow: BatchUnitOfWork, *, clock: Clock = utcnow
) -> None:
    await move(uow, [(r, placed) for r in received], clock())


async def follow_failures(
    received: list[Received], uow: BatchUnitOfWork, *, clock: Clock = utcnow
) -> None:
    await move(uow, [(r, ended) for r in received], clock())


async def follow_leases(
    received: list[Received], uow: BatchUnitOfWork, *, clock: Clock = utcnow
) -> None:
    await move(uow, [(r, extended) for r in received], clock())


async def release_denied(
    received: list[Received], uow: BatchUnitOfWork, *, clock: Clock = utcnow
) -> None:
    await move(uow, [(r, denied) for r in received], clock())


async def follow_states(
    received: list[Received], uow: BatchUnitOfWork, *, clock: Clock = utcnow
) -> None:
    """Every state change: running opens a spell, any other state closes the open one (each
    spell keyed by its start, so a redelivery counts once); termination releases the room."""
    ids = [r.event.instance_id for r in received]
    entries = await repository.entries(uow.conn, ids)
    known = [r for r in received if str(r.event.instance_id) in entries]
    await _write_spells(uow, known)
    ends: list[tuple[Received, Change]] = [
        (r, ended) for r in known if r.event.new_state is InstanceState.TERMINATED
    ]
    await move(uow, ends, clock(), entries)


async def _write_spells(uow: BatchUnitOfWork, known: list[Received]) -> None:
    if not known:
        return
    seen: dict[str, list[Seen]] = {}
    ids: dict[str, uuid.UUID] = {}
    for item in known:
        event: InstanceStateChanged = item.event
        key = str(event.instance_id)
        ids[key] = event.instance_id
        running = event.new_state is InstanceState.RUNNING
        final = event.new_state is InstanceState.TERMINATED
        seen.setdefault(key, []).append(Seen(running, event.observed_at, final))
    latest = await repository.latest_spells(uow.conn, list(ids.values()))
    spells = [
        (ids[key], spell)
        for key, changes in seen.items()
        for spell in follow_spells(latest.get(key), changes)
    ]
    await repository.write_spells(uow.conn, spells)


async def admit_approved(received: list[Received], uow: BatchUnitOfWork) -> None:
    """An approved launch goes on: its kept launch is admitted (to its entry's owner now), once;
    an approved member of a deployment is only no longer held (the scheduler's orchestrator
    launches it); an entry no longer awaiting approval (approved already, denied) changes
    nothing."""
    ids = [r.event.instance_id for r in received]
    entries = await repository.entries(uow.conn, ids)
    kept = await repository.kept_launches(uow.conn, ids)
    changed: list[Entry] = []
    for item in received:
        event: InstanceApproved = item.event
        key = str(event.instance_id)
        entry, launch = entries.get(key), kept.pop(key, None)
        if entry is not None and entry.awaiting and entry.deployment_id is not None:
            entries[key] = replace(entry, awaiting=False)
            changed.append(entries[key])
            log.info("approved_member_unheld", instance_id=key, decided_by=event.decided_by)
            continue
        if entry is None or not entry.awaiting or launch is None:
            log.info("approval_ignored", instance_id=key, awaiting=bool(entry and entry.awaiting))
            continue
        requested = InstanceLaunchRequested.model_validate({**launch, "owner": entry.owner})
        uow.publish(InstanceLaunchAdmitted.of(requested), cause=item.envelope)
        entries[key] = replace(entry, awaiting=False)
        changed.append(entries[key])
        log.info("approved_launch_admitted", instance_id=key, decided_by=event.decided_by)
    await repository.update_entries(uow.conn, changed)
