"""Refuses request bodies above ``BOREAS_MAX_BODY_BYTES`` with 413 before reading them.

A declared ``Content-Length`` over the limit is answered at once, the body unread. A body without
one (chunked) is counted as it arrives and cut off at the limit.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.exceptions import HTTPException

from services.gateway.problems import problem

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]


class BodyLimit:
    def __init__(self, app: App, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    def _detail(self) -> str:
        return f"The request body is larger than this gateway takes ({self.max_bytes} bytes)."

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await _refuse(scope, send, self._detail())
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Raised inside the body read: the problem handlers answer 413.
                    raise HTTPException(413, self._detail())
            return message

        await self.app(scope, counted, send)


def _content_length(scope: MutableMapping[str, Any]) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            # A malformed length is the HTTP server's to refuse; count the body instead.
            return int(value) if value.isdigit() else None
    return None


async def _refuse(scope: MutableMapping[str, Any], send: Send, detail: str) -> None:
    async def nothing_read() -> Message:  # the body stays unread
        return {"type": "http.disconnect"}

    await problem(413, detail, headers={"Connection": "close"})(scope, nothing_read, send)
