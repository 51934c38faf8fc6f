"""GET /v1/events: the caller's own events as server-sent events, resumable with Last-Event-ID."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Request
from fastapi.responses import StreamingResponse

from services.gateway.deps import CurrentUser, GatewayDep
from services.gateway.repository import feed

router = APIRouter(tags=["events"])

POLL_SECONDS = 0.25
# The feed numbers rows with a PostgreSQL bigint.
MAX_FEED_NUMBER = 2**63 - 1
KEEPALIVE_SECONDS = 15.0


@router.get(
    "/v1/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
            "description": "`id:` the feed number, `event:` the topic, `data:` the CloudEvent",
        },
        400: {},
    },
)
async def event_stream(
    request: Request,
    user: CurrentUser,
    gw: GatewayDep,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=20)] = None,
) -> StreamingResponse:
    """Without Last-Event-ID: events from now on. With it: everything after that id that the
    feed still holds (a week). Users get their own events; admins everyone's."""
    if last_event_id is not None:
        position = _feed_number(last_event_id)
    else:
        position = await gw.pool.fetchval("SELECT coalesce(max(seq), 0) FROM event_feed")
    owner = None if user.is_admin else user.username

    async def stream() -> AsyncIterator[str]:
        seq, quiet = position, 0.0
        yield ": connected\n\n"
        while not await request.is_disconnected():
            rows = await feed.after(gw.pool, seq, owner=owner)
            for row in rows:
                seq = row["seq"]
                yield f"id: {seq}\nevent: {row['topic']}\ndata: {row['envelope']}\n\n"
            if rows:
                quiet = 0.0
                continue
            await asyncio.sleep(POLL_SECONDS)
            quiet += POLL_SECONDS
            if quiet >= KEEPALIVE_SECONDS:
                quiet = 0.0
                yield ": keep-alive\n\n"

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )


def _feed_number(last_event_id: str) -> int:
    # ASCII digits only: str.isdigit() also takes "²", which int() refuses.
    number = int(last_event_id) if last_event_id.isascii() and last_event_id.isdigit() else -1
    if not 0 <= number <= MAX_FEED_NUMBER:
        raise HTTPException(
            400, "Last-Event-ID must be an id this stream sent (a number from 0 to 2^63-1)."
        )
    return number
