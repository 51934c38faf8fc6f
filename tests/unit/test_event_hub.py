"""The event hub against an in-memory feed that counts its reads: one read per round however many
streams are open, each stream only its owner's rows (admins everyone's), a resumed stream's
backlog and live rows each once and in order, and a client that cannot keep up cut off."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from uuid import UUID

from services.gateway.event_hub import Ending, EventHub, Stream
from services.gateway.repository.feed import FeedRow

KEEPALIVE = 60.0  # never reached: each test takes only batches it knows are there


class MemoryFeed:
    """The feed and the stream leases in memory (implements event_hub.Feed)."""

    def __init__(self) -> None:
        self.rows: list[FeedRow] = []
        self.leases: dict[UUID, str] = {}
        self.calls: Counter[str] = Counter()
        # Runs inside a read, as an append and a subscription racing it would.
        self.during_read: Callable[[], Awaitable[None]] | None = None

    def append(self, *owners: str | None) -> list[int]:
        for owner in owners:
            seq = len(self.rows) + 1
            self.rows.append(FeedRow(seq, owner, "instance.rejected", json.dumps({"n": seq})))
        return [row.seq for row in self.rows[-len(owners) :]]

    async def _read(self, what: str) -> None:
        self.calls[what] += 1
        if self.during_read is not None:
            during, self.during_read = self.during_read, None
            await during()

    async def horizon(self) -> int:
        await self._read("horizon")
        return self.rows[-1].seq if self.rows else 0

    async def after(self, seq: int, limit: int) -> list[FeedRow]:
        await self._read("after")
        return [row for row in self.rows if row.seq > seq][:limit]

    async def backlog(self, after: int, upto: int, owner: str | None, limit: int) -> list[FeedRow]:
        found = [
            row
            for row in self.rows
            if after < row.seq <= upto and (owner is None or row.owner == owner)
        ][:limit]
        await self._read("backlog")
        return found

    async def listen(self, on_notify: Callable[[], None]) -> None:
        await asyncio.Event().wait()

    async def admit(
        self, stream_id: UUID, owner: str, holder: str, cap: int, lease_seconds: float
    ) -> bool:
        if sum(1 for held in self.leases.values() if held == owner) >= cap:
            return False
        self.leases[stream_id] = owner
        return True

    async def renew(
        self, holder: str, streams: Sequence[tuple[UUID, str]], lease_seconds: float
    ) -> None:
        self.calls["renew"] += 1
        self.leases.update(streams)

    async def release(self, stream_id: UUID) -> None:
        self.leases.pop(stream_id, None)

    async def release_holder(self, holder: str) -> None:
        self.leases.clear()


async def started(feed: MemoryFeed, **options: int) -> EventHub:
    hub = EventHub(streams_per_user=1000, holder="unit", **options)
    await hub.start(feed)
    return hub


async def caught_up(hub: EventHub) -> None:
    """Read rounds until the hub has read the feed to its end, as its loop does."""
    while await hub.tick() == hub.page:
        pass


async def received(batches: AsyncIterator[list[FeedRow]], count: int) -> list[int]:
    seqs: list[int] = []
    while len(seqs) < count:
        seqs += [row.seq for row in await anext(batches)]
    return seqs


async def test_one_read_per_round_however_many_streams_are_open() -> None:
    calls = {}
    for streams in (1, 300):
        feed = MemoryFeed()
        hub = await started(feed)
        owners = [f"user-{i % 30}" for i in range(streams)]
        opened = [await hub.open(owner, everyone=False) for owner in owners]
        admin = await hub.open("admin", everyone=True)
        feed.calls.clear()
        for _ in range(3):
            feed.append("user-0", "user-1", "user-29", None)
            await hub.tick()
        await hub.renew()
        calls[streams] = dict(feed.calls)
        # They did get their rows: the reads were shared, not skipped.
        for stream, owner in zip(opened, owners, strict=True):
            expected = [r.seq for r in feed.rows if r.owner == owner]
            assert [r.seq for r in await stream.take(0)] == expected
        assert len(await admin.take(0)) == 12
    assert calls[1] == calls[300] == {"after": 3, "renew": 1}


async def test_each_stream_gets_its_owners_rows_and_an_admins_gets_all() -> None:
    feed = MemoryFeed()
    hub = await started(feed)
    alice = await hub.open("alice", everyone=False)
    alice_again = await hub.open("alice", everyone=False)
    bob = await hub.open("bob", everyone=False)
    admin = await hub.open("admin", everyone=True)
    feed.append("alice", "bob", "alice", None, "carol", "bob")
    await hub.tick()
    assert [r.seq for r in await alice.take(0)] == [1, 3]
    assert [r.seq for r in await alice_again.take(0)] == [1, 3]
    assert [r.seq for r in await bob.take(0)] == [2, 6]
    assert [r.seq for r in await admin.take(0)] == [1, 2, 3, 4, 5, 6]


async def test_a_resumed_stream_gets_its_backlog_then_the_hubs_rows_each_once() -> None:
    feed = MemoryFeed()
    feed.append("alice", "bob", "alice", "alice", "bob", "alice", "alice")
    hub = await started(feed, page=2)  # the backlog comes in pages
    stream = await hub.open("alice", everyone=False)
    assert stream.horizon == 7

    async def rows_committed_while_the_backlog_is_read() -> None:
        feed.append("alice", "bob", "alice")
        await caught_up(hub)

    feed.during_read = rows_committed_while_the_backlog_is_read
    batches = hub.follow(stream, 0, KEEPALIVE)
    assert await received(batches, 7) == [1, 3, 4, 6, 7, 8, 10]
    assert [r.seq for r in feed.rows if r.owner == "alice"] == [1, 3, 4, 6, 7, 8, 10]
    assert feed.calls["backlog"] == 3  # 5 rows of hers up to the horizon, 2 a page

    feed.append("alice")
    await caught_up(hub)
    assert await received(batches, 1) == [11]


async def test_a_position_ahead_of_the_hub_skips_what_was_sent_already() -> None:
    feed = MemoryFeed()
    hub = await started(feed)
    feed.append("alice", "alice", "alice")  # another process's hub sent them already
    stream = await hub.open("alice", everyone=False)
    batches = hub.follow(stream, 2, KEEPALIVE)
    await hub.tick()
    assert await received(batches, 1) == [3]
    assert feed.calls["backlog"] == 0


async def test_a_fresh_stream_starts_at_the_hubs_horizon_without_a_query() -> None:
    feed = MemoryFeed()
    feed.append("alice", "alice")
    hub = await started(feed)
    stream = await hub.open("alice", everyone=False)
    batches = hub.follow(stream, None, KEEPALIVE)
    feed.append("alice")
    await hub.tick()
    assert await received(batches, 1) == [3]
    assert feed.calls["backlog"] == 0


async def test_a_client_that_cannot_keep_up_is_cut_off_and_holds_nothing() -> None:
    feed = MemoryFeed()
    hub = await started(feed, buffer=3)
    slow = await hub.open("alice", everyone=False)
    other = await hub.open("bob", everyone=False)
    batches = hub.follow(slow, None, KEEPALIVE)
    feed.append("alice", "alice", "alice", "bob", "alice", "alice")
    await hub.tick()
    assert slow.ended is Ending.FELL_BEHIND
    assert [row async for row in batches] == []  # ends at once, nothing held back
    assert other.ended is None
    assert [r.seq for r in await other.take(0)] == [4]


async def test_nobody_listening_skips_ahead_unless_a_stream_subscribes_meanwhile() -> None:
    feed = MemoryFeed()
    hub = await started(feed)
    feed.append("alice", "bob")
    await hub.tick()
    assert feed.calls == {"horizon": 2}  # no rows read for nobody

    opened: list[Stream] = []

    async def subscribe_during_the_read() -> None:
        feed.append("alice")
        opened.append(await hub.open("alice", everyone=False))

    feed.during_read = subscribe_during_the_read
    await hub.tick()  # the skip would pass row 3, which the new stream is owed
    await hub.tick()
    assert [r.seq for r in await opened[0].take(0)] == [3]


async def test_a_closed_stream_gets_nothing_more_and_gives_its_slot_back() -> None:
    feed = MemoryFeed()
    hub = await started(feed)
    stream = await hub.open("alice", everyone=False)
    assert stream.id in feed.leases
    await hub.close(stream)
    assert stream.id not in feed.leases
    feed.append("alice")
    await hub.tick()
    assert await stream.take(0) == []
    await hub.renew()
    assert stream.id not in feed.leases


async def test_a_stopping_hub_ends_its_streams_and_gives_back_their_slots() -> None:
    feed = MemoryFeed()
    hub = EventHub(streams_per_user=5, holder="unit")
    running = asyncio.create_task(hub.run(feed))
    await hub.ready.wait()
    stream = await hub.open("alice", everyone=False)
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)
    assert stream.ended is Ending.STOPPING
    assert feed.leases == {}
