"""Which due deliveries a replica starts next: shared out among their webhooks' owners.

Pure: the worker reads the candidates and counts its own requests in flight, and this decides.
The owner is the webhook's (the one who chose the receiver), not the event's: an admin's
all-scoped webhook is the admin's share. Each next slot goes to the owner with the fewest
deliveries in flight, so a slow receiver's backlog fills at most its owner's share of the pool
and an owner who just arrived goes first. The cap per owner sits below the pool (settings
refuse otherwise), so one owner never holds every slot.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Candidate:
    """A delivery that may be sent now: due, and the first unfinished one of its ordering key."""

    id: int
    owner: str
    due: datetime


def share_out(
    candidates: Iterable[Candidate],
    *,
    in_flight: Mapping[str, int],
    per_owner: int,
    room: int,
) -> list[Candidate]:
    """Up to ``room`` candidates to start, in the order chosen.

    Each pick goes to the owner with the fewest deliveries in flight, counting those picked
    before it (so owners take turns), and among equals to the delivery due first. No owner gets
    past ``per_owner`` in flight; within one owner, deliveries are taken earliest due first."""
    by_owner: dict[str, list[Candidate]] = defaultdict(list)
    for candidate in candidates:
        by_owner[candidate.owner].append(candidate)
    ranked: list[tuple[int, datetime, int, Candidate]] = []
    for owner, theirs in by_owner.items():
        busy = in_flight.get(owner, 0)
        theirs.sort(key=lambda c: (c.due, c.id))
        for turn, candidate in enumerate(theirs[: max(per_owner - busy, 0)]):
            # The owner's in-flight count just before this one would start: their turn.
            ranked.append((busy + turn, candidate.due, candidate.id, candidate))
    ranked.sort(key=lambda r: r[:3])
    return [candidate for *_, candidate in ranked[: max(room, 0)]]
