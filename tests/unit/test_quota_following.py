"""How instance events move ledger entries (pure): placements set the placed price, leases only
lengthen, approvals' denials release only what awaits, and a batch reports each owner whose usage
or cost moved, caused by the last event that moved it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

from services.quota.accounting import Amounts, Entry, Status
from services.quota.following import apply, denied, ended, extended, placed
from shared.events import InstanceDenied, InstanceLeaseExtended, InstancePlaced
from tests.fakes import received

NOON = datetime(2026, 11, 15, 12, tzinfo=UTC)


def entry(status: Status = Status.RESERVED, **fields: object) -> Entry:
    return Entry(uuid.uuid4(), "alice", Amounts(1, 2, 1024), status, Decimal("0.5"), **fields)  # type: ignore[arg-type]


def placement(e: Entry, price: float | None) -> InstancePlaced:
    return InstancePlaced(
        instance_id=e.instance_id,
        owner=e.owner,
        account_id="a",
        provider="simulator",
        provider_instance_id="p",
        price_per_hour=price,
    )


def extension(e: Entry, hour: int) -> InstanceLeaseExtended:
    return InstanceLeaseExtended(
        instance_id=e.instance_id,
        owner=e.owner,
        expires_at=datetime(2026, 11, 15, hour, tzinfo=UTC),
        extended_by="alice",
    )


def denial(e: Entry) -> InstanceDenied:
    return InstanceDenied(
        instance_id=e.instance_id, owner=e.owner, decided_by="x", decided_at=NOON, reason="no"
    )


def test_a_placement_activates_and_takes_the_placed_price() -> None:
    e = entry()
    moved = placed(e, placement(e, 0.25))
    assert moved is not None and (moved.status, moved.price) == (Status.ACTIVE, Decimal("0.25"))
    assert placed(moved, placement(e, 0.25)) is None  # delivered again
    # No price from the catalog: the admission price stays (what the budget counted).
    unpriced = placed(e, placement(e, None))
    assert unpriced is not None and unpriced.price == Decimal("0.5")


def test_a_lease_only_lengthens() -> None:
    e = entry(expires_at=datetime(2026, 11, 15, 14, tzinfo=UTC))
    longer = extended(e, extension(e, 16))
    assert longer is not None and longer.expires_at == datetime(2026, 11, 15, 16, tzinfo=UTC)
    assert extended(longer, extension(e, 15)) is None


def test_a_denial_releases_only_a_launch_awaiting_approval() -> None:
    held = entry(awaiting=True)
    released = denied(held, denial(held))
    assert released is not None and (released.status, released.awaiting) == (
        Status.RELEASED,
        False,
    )
    assert denied(released, denial(held)) is None
    assert denied(entry(Status.ACTIVE), None) is None  # approved already: denial ignored
    assert ended(released, None) is None


def test_a_batch_reports_the_owners_whose_usage_or_cost_moved() -> None:
    same_price, cheaper, ending = entry(), entry(), entry(Status.ACTIVE)
    bob = Entry(uuid.uuid4(), "bob", Amounts(1, 1, 1), Status.ACTIVE, Decimal(1))
    entries = {str(e.instance_id): e for e in (same_price, cheaper, ending, bob)}
    batch = received(
        placement(same_price, 0.5),
        placement(cheaper, 0.1),
        denial(ending),  # not awaiting: nothing
        placement(bob, 1.0),
    )
    moves = [(r, placed) for r in batch]
    moves[2] = (batch[2], denied)

    moved = apply(moves, entries)

    assert set(moved.changed) == {str(same_price.instance_id), str(cheaper.instance_id)}
    # alice's cost moved (a cheaper placement), her counts did not; bob's placement moved
    # nothing of his (already active at that price).
    assert moved.deltas == {"alice": Amounts()}
    assert moved.last_cause == {"alice": batch[1].envelope}


def test_an_end_releases_the_room_and_events_of_unknown_instances_are_ignored() -> None:
    e = entry(Status.ACTIVE)
    stranger = entry()
    moved = apply(
        [(r, ended) for r in received(denial(e), denial(stranger), denial(e))],
        {str(e.instance_id): e},
    )
    assert moved.deltas == {"alice": Amounts(-1, -2, -1024)}
    assert moved.entries[str(e.instance_id)].status is Status.RELEASED
