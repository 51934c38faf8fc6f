"""GET /v1/events: the caller's own events as server-sent events, resumable with Last-Event-ID,
fed by the process's event hub, at most BOREAS_EVENT_STREAMS_PER_USER at once per user, each
ended by the hub once the token it was opened with is no longer valid. sse-starlette does the
protocol: framing, keep-alive comments, the client's disconnect, the server's shutdown."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import APIRouter, Header, HTTPException, Request
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from services.gateway import security
from services.gateway.deps import BearerToken, CurrentUser
from services.gateway.event_hub import (
    LEASE_SECONDS,
    Ending,
    EventHub,
    HubNotReady,
    Stream,
    StreamRefused,
)
from services.gateway.problems import problem
from services.gateway.repository.feed import FeedRow
from services.gateway.repository.identity import User

router = APIRouter(tags=["events"])

# The feed numbers rows with a PostgreSQL bigint.
MAX_FEED_NUMBER = 2**63 - 1
KEEPALIVE_SECONDS = 15.0
SEPARATOR = "\n"  # sse-starlette's default is CRLF; clients have always had LF
# How long a stream has, once the server stops, to say so before it is cut off.
SHUTDOWN_GRACE_SECONDS = 2.0
RESUME = "reconnect with Last-Event-ID to resume"
# The last words of a stream the server ends (a client that went away hears nothing).
LAST_WORDS = {
    Ending.FELL_BEHIND: (
        f"cut off: more events waited for this client than a stream may hold; {RESUME}"
    ),
    Ending.STOPPING: f"this gateway is stopping; {RESUME}",
    Ending.DATABASE_AWAY: f"the database is not reachable right now; {RESUME}",
    Ending.TOKEN_INVALID: (
        "closed: your token was revoked or expired, or your account was disabled;"
        f" log in again and {RESUME}"
    ),
}


class EventStreamResponse(EventSourceResponse):
    """Takes a slot when the server calls it and gives it back when the stream ends, however it
    ends. sse-starlette listens for the client's disconnect, so a closed client frees its slot at
    once (a write to it would only notice at the next keep-alive), and for the server's shutdown,
    which ends the stream with its last words rather than cutting it off."""

    def __init__(
        self, hub: EventHub, user: User, token_digest: bytes, position: int | None
    ) -> None:
        self.hub, self.user, self.position = hub, user, position
        self.token_digest = token_digest
        self.stream: Stream | None = None
        self.server_stopping = anyio.Event()
        super().__init__(
            self._frames(),
            headers={"Cache-Control": "no-cache"},
            sep=SEPARATOR,
            ping=KEEPALIVE_SECONDS,
            ping_message_factory=lambda: _comment("keep-alive"),
            client_close_handler_callable=self._client_gone,
            shutdown_event=self.server_stopping,
            shutdown_grace_period=SHUTDOWN_GRACE_SECONDS,
            data_sender_callable=self._end_when_server_stops,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            self.stream = await self.hub.open(
                self.user.username, everyone=self.user.is_admin, token_digest=self.token_digest
            )
        except StreamRefused:
            cap = self.hub.streams_per_user
            refusal = problem(
                429,
                f"You have {cap} event streams open, as many as one user may; close one first.",
                headers={"Retry-After": str(int(LEASE_SECONDS))},
            )
            await refusal(scope, receive, send)
            return
        except HubNotReady:
            away = problem(
                503,
                "Event streams are not available yet; retry shortly.",
                headers={"Retry-After": "5"},
            )
            await away(scope, receive, send)
            return
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.hub.close(self.stream)

    async def _frames(self) -> AsyncIterator[ServerSentEvent | bytes]:
        stream = self.stream
        assert stream is not None, "the body is read only once the stream is open"
        yield _comment("connected")
        # The hub's empty batches mark idle time: sse-starlette sends the keep-alives itself.
        async for rows in self.hub.follow(stream, self.position, KEEPALIVE_SECONDS):
            if rows:
                yield b"".join(_event(row).encode() for row in rows)
        last_words = LAST_WORDS.get(stream.ended) if stream.ended else None
        if last_words:
            yield _comment(last_words)

    async def _client_gone(self, _message: Message) -> None:
        if self.stream is not None:
            self.stream.end(Ending.CLIENT_GONE)

    async def _end_when_server_stops(self) -> None:
        await self.server_stopping.wait()
        if self.stream is not None:
            self.stream.end(Ending.STOPPING)


@router.get(
    "/v1/events",
    status_code=200,
    response_class=EventStreamResponse,
    responses={
        200: {
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
            "description": "`id:` the feed number, `event:` the topic, `data:` the CloudEvent",
        },
        400: {},
        429: {"description": "the caller has BOREAS_EVENT_STREAMS_PER_USER streams open"},
    },
)
async def event_stream(
    request: Request,
    user: CurrentUser,
    token: BearerToken,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=20)] = None,
) -> Response:
    """Without Last-Event-ID: events from now on. With it: everything after that id that the
    feed still holds (a week). Users get their own events; admins everyone's. The stream ends
    once its token is no longer valid (revoked, expired, its user disabled or deleted)."""
    position = None if last_event_id is None else _feed_number(last_event_id)
    hub = request.app.state.event_hub
    return EventStreamResponse(hub, user, security.token_digest(token), position)


def _event(row: FeedRow) -> ServerSentEvent:
    return ServerSentEvent(row.envelope, id=str(row.seq), event=row.topic, sep=SEPARATOR)


def _comment(text: str) -> ServerSentEvent:
    return ServerSentEvent(comment=text, sep=SEPARATOR)


def _feed_number(last_event_id: str) -> int:
    # ASCII digits only: str.isdigit() also takes "²", which int() refuses.
    number = int(last_event_id) if last_event_id.isascii() and last_event_id.isdigit() else -1
    if not 0 <= number <= MAX_FEED_NUMBER:
        raise HTTPException(
            400, "Last-Event-ID must be an id this stream sent (a number from 0 to 2^63-1)."
        )
    return number
