"""Sharing a notifier replica's delivery slots among webhook owners: turns, the cap per owner,
earliest due first within an owner; and, over arbitrary cases, that no owner is ever passed over
for one that already has more in flight."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import hypothesis.strategies as st
from hypothesis import given

from services.notifier.fairness import Candidate, share_out

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def backlog(owner: str, count: int, first_id: int, start: int = 0) -> list[Candidate]:
    return [Candidate(first_id + i, owner, T0 + timedelta(seconds=start + i)) for i in range(count)]


def owners(chosen: list[Candidate]) -> list[str]:
    return [c.owner for c in chosen]


def test_an_owner_with_a_backlog_and_one_with_a_single_later_delivery_take_turns() -> None:
    older = backlog("ann", 10, first_id=1)
    later = backlog("bea", 1, first_id=100, start=60)
    chosen = share_out([*older, *later], in_flight={}, per_owner=8, room=3)
    assert owners(chosen) == ["ann", "bea", "ann"]
    assert [c.id for c in chosen] == [1, 100, 2]


def test_owners_with_fewer_in_flight_go_first_however_old_the_others_are() -> None:
    candidates = [
        *backlog("ann", 5, first_id=1),
        *backlog("bea", 5, first_id=10, start=100),
        *backlog("cy", 5, first_id=20, start=200),
    ]
    chosen = share_out(candidates, in_flight={"ann": 2, "bea": 1}, per_owner=8, room=4)
    # cy (none in flight) first; then bea and cy at one each; then everyone at two, oldest first.
    assert owners(chosen) == ["cy", "bea", "cy", "ann"]


def test_no_owner_goes_past_the_cap_even_with_room_to_spare() -> None:
    candidates = [*backlog("ann", 10, first_id=1), *backlog("bea", 10, first_id=20)]
    chosen = share_out(candidates, in_flight={"ann": 2}, per_owner=3, room=30)
    assert Counter(owners(chosen)) == {"ann": 1, "bea": 3}
    assert share_out(candidates, in_flight={"ann": 3, "bea": 5}, per_owner=3, room=30) == []


def test_within_an_owner_the_earliest_due_goes_first_then_the_lowest_id() -> None:
    same_time = [Candidate(7, "ann", T0), Candidate(3, "ann", T0)]
    earlier = Candidate(9, "ann", T0 - timedelta(seconds=1))
    chosen = share_out([*same_time, earlier], in_flight={}, per_owner=8, room=3)
    assert [c.id for c in chosen] == [9, 3, 7]


def test_no_room_starts_nothing() -> None:
    assert share_out(backlog("ann", 3, first_id=1), in_flight={}, per_owner=8, room=0) == []


cases = st.lists(
    st.tuples(st.sampled_from("abcde"), st.integers(0, 50)), max_size=40, unique_by=lambda t: t
)


@given(
    cases,
    st.dictionaries(st.sampled_from("abcde"), st.integers(0, 6)),
    st.integers(1, 6),
    st.integers(0, 12),
)
def test_each_slot_goes_to_an_owner_with_the_fewest_in_flight(
    pairs: list[tuple[str, int]], in_flight: dict[str, int], per_owner: int, room: int
) -> None:
    candidates = [
        Candidate(i, owner, T0 + timedelta(seconds=s)) for i, (owner, s) in enumerate(pairs)
    ]
    chosen = share_out(candidates, in_flight=in_flight, per_owner=per_owner, room=room)

    assert len(chosen) <= room
    assert len({c.id for c in chosen}) == len(chosen)
    counts = Counter(in_flight)
    for n, candidate in enumerate(chosen):
        # Whoever else could still have taken this slot had at least as many in flight.
        left = [c for c in candidates if c not in chosen[:n] and counts[c.owner] < per_owner]
        assert all(counts[c.owner] >= counts[candidate.owner] for c in left)
        counts[candidate.owner] += 1
        assert counts[candidate.owner] <= per_owner
    # Each owner's picks are its earliest due.
    for owner in {c.owner for c in chosen}:
        theirs = sorted((c for c in candidates if c.owner == owner), key=lambda c: (c.due, c.id))
        picked = [c for c in chosen if c.owner == owner]
        assert picked == theirs[: len(picked)]
    # Room is left unused only when no owner may take more.
    if len(chosen) < room:
        assert all(c in chosen or counts[c.owner] >= per_owner for c in candidates)
