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
        if not last_event_id.isdigit():
            raise HTTPException(400, "Last-Event-ID must be an id this stream sent.")
        position = int(last_event_id)
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
