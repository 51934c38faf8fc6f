"""The event hub against an in-memory feed that counts its reads: one read per round however many
streams are open, each stream only its owner's rows (admins everyone's), a resumed stream's
backlog and live rows each once and in order, a client that cannot keep up cut off, and a stream
whose token is no longer valid ended at the next renewal, in as many calls however many are open."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from uuid import UUID

from services.gateway.event_hub import Ending, EventHub, Stream
from services.gateway.repository.feed import FeedRow, StreamLease

KEEPALIVE = 60.0  # never reached: each test takes only batches it knows are there


class MemoryFeed:
    """The feed and the stream leases in memory (implements event_hub.Feed)."""

    def __init__(self) -> None:
        self.rows: list[FeedRow] = []
        self.leases: dict[UUID, str] = {}
        self.tokens: dict[UUID, bytes] = {}  # the digest of the token each stream opened with
        # Digests of tokens revoked or expired, or of users disabled or deleted.
        self.invalid: set[bytes] = set()
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

    async def admit(self, lease: StreamLease, holder: str, cap: int, lease_seconds: float) -> bool:
        if sum(1 for held in self.leases.values() if held == lease.owner) >= cap:
            return False
        self.leases[lease.stream_id] = lease.owner
        self.tokens[lease.stream_id] = lease.token_digest
        return True

    async def renew(
        self, holder: str, leases: Sequence[StreamLease], lease_seconds: float
    ) -> set[UUID]:
        self.calls["renew"] += 1
        for stream_id, owner, token_digest in leases:
            self.leases[stream_id] = owner
            self.tokens[stream_id] = token_digest
        return {stream_id for stream_id, _, digest in leases if digest in self.invalid}

    async def release(self, stream_id: UUID) -> None:
        self.calls["release"] += 1
        self.leases.pop(stream_id, None)
        self.tokens.pop(stream_id, None)

    async def release_holder(self, holder: str) -> None:
        self.calls["release_holder"] += 1
        self.leases.clear()
        self.tokens.clear()


async def started(feed: MemoryFeed, **options: int) -> EventHub:
    hub = EventHub(streams_per_user=1000, holder="unit", **options)
    await hub.start(feed)
    return hub


async def open_as(
    hub: EventHub, owner: str, *, everyone: bool = False, token: bytes | None = None
) -> Stream:
    """A stream of ``owner``'s, opened with ``token`` (a token's digest; by default theirs)."""
    digest = token if token is not None else f"{owner}'s token".encode()
    return await hub.open(owner, everyone=everyone, token_digest=digest)


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
        opened = [await open_as(hub, owner) for owner in owners]
        admin = await open_as(hub, "admin", everyone=True)
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
    alice = await open_as(hub, "alice")
    alice_again = await open_as(hub, "alice")
    bob = await open_as(hub, "bob")
    admin = await open_as(hub, "admin", everyone=True)
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
    stream = await open_as(hub, "alice")
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
    stream = await open_as(hub, "alice")
    batches = hub.follow(stream, 2, KEEPALIVE)
    await hub.tick()
    assert await received(batches, 1) == [3]
    assert feed.calls["backlog"] == 0


async def test_a_fresh_stream_starts_at_the_hubs_horizon_without_a_query() -> None:
    feed = MemoryFeed()
    feed.append("alice", "alice")
    hub = await started(feed)
    stream = await open_as(hub, "alice")
    batches = hub.follow(stream, None, KEEPALIVE)
    feed.append("alice")
    await hub.tick()
    assert await received(batches, 1) == [3]
    assert feed.calls["backlog"] == 0


async def test_a_client_that_cannot_keep_up_is_cut_off_and_holds_nothing() -> None:
    feed = MemoryFeed()
    hub = await started(feed, buffer=3)
    slow = await open_as(hub, "alice")
    other = await open_as(hub, "bob")
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
        opened.append(await open_as(hub, "alice"))

    feed.during_read = subscribe_during_the_read
    await hub.tick()  # the skip would pass row 3, which the new stream is owed
    await hub.tick()
    assert [r.seq for r in await opened[0].take(0)] == [3]


async def test_a_closed_stream_gets_nothing_more_and_gives_its_slot_back() -> None:
    feed = MemoryFeed()
    hub = await started(feed)
    stream = await open_as(hub, "alice")
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
    stream = await open_as(hub, "alice")
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)
    assert stream.ended is Ending.STOPPING
    assert feed.leases == {}


async def test_a_renewal_ends_exactly_the_streams_whose_tokens_are_no_longer_valid() -> None:
    feed = MemoryFeed()
    hub = await started(feed)
    logged_out, kept, disabled_admin = b"alice's first token", b"alice's second", b"an admin's"
    ending = [
        await open_as(hub, "alice", token=logged_out),
        await open_as(hub, "alice", token=logged_out),
        await open_as(hub, "admin", everyone=True, token=disabled_admin),
    ]
    going_on = [
        await open_as(hub, "alice", token=kept),
        await open_as(hub, "bob"),
        await open_as(hub, "another admin", everyone=True),
    ]
    feed.append("alice")
    await hub.tick()  # waiting in the buffers when the tokens lapse
    feed.invalid |= {logged_out, disabled_admin}
    await hub.renew()

    assert [stream.ended for stream in ending] == [Ending.TOKEN_INVALID] * 3
    assert [stream.ended for stream in going_on] == [None] * 3
    for stream in ending:
        assert [batch async for batch in hub.follow(stream, None, KEEPALIVE)] == []
        await hub.close(stream)
    assert set(feed.leases) == {stream.id for stream in going_on}
    feed.append("alice", "bob")
    await hub.tick()
    assert [[r.seq for r in await s.take(0)] for s in going_on] == [[1, 2], [3], [1, 2, 3]]


async def test_a_renewal_checks_the_tokens_in_as_many_calls_for_1_stream_as_for_300() -> None:
    calls = {}
    for count in (1, 300):
        feed = MemoryFeed()
        hub = await started(feed)
        tokens = [f"token {i}".encode() for i in range(count)]
        streams = [await open_as(hub, f"user-{i % 30}", token=tokens[i]) for i in range(count)]
        feed.invalid |= set(tokens[::3])
        feed.calls.clear()
        await hub.renew()
        calls[count] = dict(feed.calls)
        ended = [stream.ended is Ending.TOKEN_INVALID for stream in streams]
        assert ended == [digest in feed.invalid for digest in tokens]
    assert calls[1] == calls[300] == {"renew": 1}
