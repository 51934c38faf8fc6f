"""One listener per gateway process feeds every GET /v1/events stream that process serves.

The hub reads the feed once per round for everyone (``seq > last_seen``, a page at a time) and
hands each row to the open streams of its owner (and to admins' streams, which get everything).
Each stream holds the rows it has not sent yet in a bounded buffer: a client that cannot keep up
is cut off (it resumes with Last-Event-ID) rather than growing the process's memory. The hub's
queries per round do not depend on how many streams are open.

Streams per user are capped across all gateway processes by leases in PostgreSQL
(``event_stream_leases``): a stream takes one when it opens and gives it back when it closes; the
hub renews all of its process's leases in one statement, so those of a process that died expire.
Each lease names the token its stream was opened with, and the same statement returns the streams
whose token is no longer valid (revoked, expired, its user disabled or deleted): the hub ends them,
so a stream outlives its token by at most RENEW_SECONDS and one round of the loop (POLL_SECONDS).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Protocol
from uuid import UUID, uuid4

import structlog

from services.gateway.repository.feed import FeedRow, StreamLease
from shared.db import TRANSIENT_DB_ERRORS

log = structlog.get_logger(__name__)

POLL_SECONDS = 1.0  # a read at least this often: appends also notify, which wakes the hub at once
MIN_GAP_SECONDS = 0.05  # between two reads, however often appends notify
PAGE = 500  # rows per read (of the feed and of a resuming stream's backlog)
BUFFER = 1000  # rows a stream may have waiting before it is cut off
LEASE_SECONDS = 15.0  # a stream's slot outlives a process that died by at most this long
RENEW_SECONDS = 5.0
READY_PATIENCE = 5.0  # seconds a new stream waits for a hub that has not read the feed yet


class Feed(Protocol):
    """What the hub needs of the database (services/gateway/repository/feed.py)."""

    async def horizon(self) -> int: ...
    async def after(self, seq: int, limit: int) -> list[FeedRow]: ...
    async def backlog(
        self, after: int, upto: int, owner: str | None, limit: int
    ) -> list[FeedRow]: ...
    async def listen(self, on_notify: Callable[[], None]) -> None: ...
    async def admit(
        self, lease: StreamLease, holder: str, cap: int, lease_seconds: float
    ) -> bool: ...
    async def renew(
        self, holder: str, leases: Sequence[StreamLease], lease_seconds: float
    ) -> set[UUID]: ...
    async def release(self, stream_id: UUID) -> None: ...
    async def release_holder(self, holder: str) -> None: ...


class Ending(enum.Enum):
    """Why a stream ends (the server never ends one for another reason)."""

    CLIENT_GONE = "client_gone"
    FELL_BEHIND = "fell_behind"
    STOPPING = "stopping"
    DATABASE_AWAY = "database_away"
    TOKEN_INVALID = "token_invalid"  # revoked, expired, or its user disabled or deleted


class StreamRefused(Exception):
    """The user has as many streams open as they may."""


class HubNotReady(Exception):
    """The hub has not read the feed yet (the database is away since this process started)."""


class Stream:
    """One open GET /v1/events: the rows the hub handed it that it has not sent yet."""

    def __init__(
        self,
        stream_id: UUID,
        username: str,
        everyone: bool,
        token_digest: bytes,
        horizon: int,
        buffer: int,
    ):
        self.id, self.username, self.everyone = stream_id, username, everyone
        self.token_digest = token_digest  # of the token it was opened with
        # When this stream subscribed, the hub had handed out every row numbered up to here
        # (and none above): older rows come from the backlog, newer ones from the hub.
        self.horizon = horizon
        self.buffer = buffer
        self.ended: Ending | None = None
        self._rows: deque[FeedRow] = deque()
        self._wake = asyncio.Event()

    @property
    def lease(self) -> StreamLease:
        return StreamLease(self.id, self.username, self.token_digest)

    def offer(self, row: FeedRow) -> None:
        if self.ended is not None:
            return
        if len(self._rows) >= self.buffer:
            self.end(Ending.FELL_BEHIND)
            return
        self._rows.append(row)
        self._wake.set()

    def end(self, why: Ending) -> None:
        """Send nothing more, not even the rows waiting (their reader may no longer see them)."""
        self._rows.clear()
        if self.ended is None:
            self.ended = why
        self._wake.set()

    async def take(self, timeout: float) -> list[FeedRow]:
        """The rows waiting, once there are some, the stream ended, or ``timeout`` passed."""
        if not self._rows and self.ended is None:
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
        rows = list(self._rows)
        self._rows.clear()
        return rows


class EventHub:
    def __init__(
        self, streams_per_user: int, *, holder: str, page: int = PAGE, buffer: int = BUFFER
    ) -> None:
        self.streams_per_user = streams_per_user
        self.holder = holder  # this process, in event_stream_leases
        self.page, self.buffer = page, buffer
        self.ready = asyncio.Event()
        self._feed: Feed | None = None
        self._last_seen: int | None = None
        self._by_owner: dict[str, set[Stream]] = {}
        self._everyone: set[Stream] = set()  # admins' streams
        self._subscribed = 0  # streams ever opened
        self._wake = asyncio.Event()

    @property
    def streams(self) -> list[Stream]:
        return [*self._everyone, *(s for streams in self._by_owner.values() for s in streams)]

    async def start(self, feed: Feed) -> None:
        """Read the feed's end (first start only: a restarted hub goes on where it stopped, so a
        database outage loses no row) and take back this process's leases."""
        self._feed = feed
        if self._last_seen is None:
            self._last_seen = await feed.horizon()
        await self.renew()
        self.ready.set()

    async def run(self, feed: Feed) -> None:
        """The hub's loop, supervised by the service runtime (restarted after a failure)."""
        await self.start(feed)
        loop = asyncio.get_running_loop()
        listener = asyncio.create_task(feed.listen(self._wake.set))
        renew_at = loop.time() + RENEW_SECONDS
        try:
            while True:
                self._wake.clear()  # before the read: an append committed during it wakes us
                full = await self.tick() == self.page
                if loop.time() >= renew_at:
                    await self.renew()
                    renew_at = loop.time() + RENEW_SECONDS
                if not full:
                    await asyncio.sleep(MIN_GAP_SECONDS)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), POLL_SECONDS)
        except asyncio.CancelledError:
            await self._stop()
            raise
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)

    async def tick(self) -> int:
        """Read the next page of the feed once and hand each row to its streams; returns how
        many rows there were.

        Why ``seq > last_seen`` misses nothing: with a bare sequence a lower number could become
        visible after a higher one (numbers are taken at insert, rows show at commit). But
        feed.append numbers rows under a transaction-level lock that PostgreSQL releases only
        once the commit is visible, so row N is visible before any append can number N+1: rows
        show in the order of their numbers, and once the hub has read N no lower one can appear.
        The gaps (rolled-back appends, duplicates skipped) are never filled. Should appends ever
        stop taking turns, this read must stop below the oldest running writer instead."""
        assert self._feed is not None and self._last_seen is not None
        if not self._everyone and not self._by_owner:
            # Nobody listens: skip to the feed's end without reading the rows, unless a stream
            # subscribed meanwhile (at the old end, so it needs the rows in between).
            subscribed = self._subscribed
            end = await self._feed.horizon()
            if self._subscribed == subscribed:
                self._last_seen = max(self._last_seen, end)
            return 0
        rows = await self._feed.after(self._last_seen, self.page)
        # From here to the end no await: a stream that subscribes sees all of this or none.
        for row in rows:
            mine = self._by_owner.get(row.owner, ()) if row.owner is not None else ()
            for stream in (*mine, *self._everyone):
                stream.offer(row)
        if rows:
            self._last_seen = rows[-1].seq
        return len(rows)

    async def renew(self) -> None:
        """Extend the leases of the streams still going and end those whose token is no longer
        valid, in one call however many there are. An ended stream's lease is left to its
        close (or to expire, should the close not come)."""
        assert self._feed is not None
        going = [s for s in self.streams if s.ended is None]
        if not going:
            return
        lapsed = await self._feed.renew(self.holder, [s.lease for s in going], LEASE_SECONDS)
        for stream in going:
            if stream.id in lapsed:
                log.info(
                    "event_stream_token_invalid", stream_id=str(stream.id), user=stream.username
                )
                stream.end(Ending.TOKEN_INVALID)

    async def open(self, username: str, *, everyone: bool, token_digest: bytes) -> Stream:
        """A slot for a new stream of ``username``, opened with the token of ``token_digest``,
        and its subscription (``everyone``: an admin's, which gets every row). Raises
        StreamRefused at the cap, HubNotReady when the hub has not read the feed yet."""
        try:
            async with asyncio.timeout(READY_PATIENCE):
                await self.ready.wait()
        except TimeoutError:
            raise HubNotReady from None
        assert self._feed is not None and self._last_seen is not None
        stream = Stream(uuid4(), username, everyone, token_digest, self._last_seen, self.buffer)
        if not await self._feed.admit(
            stream.lease, self.holder, self.streams_per_user, LEASE_SECONDS
        ):
            raise StreamRefused
        self._subscribed += 1
        if everyone:
            self._everyone.add(stream)
        else:
            self._by_owner.setdefault(username, set()).add(stream)
        return stream

    async def close(self, stream: Stream) -> None:
        """Unsubscribe ``stream`` and give its slot back (if the database is away, its lease is
        no longer renewed and expires)."""
        self._everyone.discard(stream)
        mine = self._by_owner.get(stream.username)
        if mine is not None:
            mine.discard(stream)
            if not mine:
                del self._by_owner[stream.username]
        if self._feed is not None:
            with contextlib.suppress(*TRANSIENT_DB_ERRORS):
                await self._feed.release(stream.id)

    async def follow(
        self, stream: Stream, position: int | None, keepalive: float
    ) -> AsyncIterator[list[FeedRow]]:
        """The rows ``stream`` is to send, in order, each once: those numbered after
        ``position`` (``None``: from now on) up to its horizon from the database, then the hub's;
        an empty batch after ``keepalive`` seconds without any. Ends when the stream ends.

        No gap and no duplicate at the handover: the stream subscribed before its backlog is
        read, and the hub hands it exactly the rows above its horizon, which the backlog stops
        at. A resumed position beyond the horizon (an id from a process whose hub was ahead)
        skips the hub's rows up to it."""
        sent = stream.horizon if position is None else position
        if sent < stream.horizon:
            async for page in self._backlog(stream, sent):
                sent = page[-1].seq
                yield page
            sent = max(sent, stream.horizon)
        async for rows in self._live(stream, sent, keepalive):
            yield rows

    async def _backlog(self, stream: Stream, sent: int) -> AsyncIterator[list[FeedRow]]:
        """The stream's rows after ``sent`` up to its horizon, from the database, a page at a
        time; a database gone away ends the stream."""
        assert self._feed is not None  # follow() comes after open(), which waits for it
        owner = None if stream.everyone else stream.username
        while stream.ended is None:
            try:
                page = await self._feed.backlog(sent, stream.horizon, owner, self.page)
            except TRANSIENT_DB_ERRORS:
                stream.end(Ending.DATABASE_AWAY)
                return
            if page:
                sent = page[-1].seq
                yield page
            if len(page) < self.page:
                return

    @staticmethod
    async def _live(stream: Stream, sent: int, keepalive: float) -> AsyncIterator[list[FeedRow]]:
        """The hub's rows for the stream above ``sent``; an empty batch after ``keepalive``
        seconds without any."""
        while stream.ended is None:
            rows = await stream.take(keepalive)
            fresh = [row for row in rows if row.seq > sent]
            if fresh:
                sent = fresh[-1].seq
                yield fresh
            elif not rows and stream.ended is None:
                yield []

    async def _stop(self) -> None:
        """The process stops: end every stream and give back this process's slots."""
        self.ready.clear()
        for stream in self.streams:
            stream.end(Ending.STOPPING)
        if self._feed is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await self._feed.release_holder(self.holder)
