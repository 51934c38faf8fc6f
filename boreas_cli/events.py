"""GET /v1/events as a client: server-sent events parsed, and a follower
that reconnects with Last-Event-ID when a stream ends (the gateway restarting, a stream cut off),
so nothing is lost or seen twice."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

import httpx

from boreas_cli.client import failure_of, unreachable

# The gateway sends a keep-alive every 15 s: a stream silent for longer than this is dead.
SILENCE_SECONDS = 40.0
# How long to keep trying to (re)connect before saying the gateway is unreachable.
RECONNECT_PATIENCE = 30.0


@dataclass(frozen=True)
class Event:
    id: str | None
    topic: str
    envelope: dict[str, Any]

    @property
    def subject(self) -> str | None:
        return self.envelope.get("subject")

    @property
    def data(self) -> dict[str, Any]:
        data = self.envelope.get("data")
        return data if isinstance(data, dict) else {}


class FrameParser:
    """The event-stream format, a line at a time: ``feed`` returns an event at each blank line
    that ends one."""

    def __init__(self) -> None:
        self._id: str | None = None
        self._topic = "message"
        self._data: list[str] = []

    def feed(self, line: str) -> Event | None:
        if line == "":
            if not self._data:
                self._topic = "message"
                return None
            event = Event(self._id, self._topic, json.loads("\n".join(self._data)))
            self._topic, self._data = "message", []
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._topic = value
        elif name == "id":
            self._id = value
        return None


class EventFeed:
    """The caller's events, from the moment ``open`` returns, across reconnections."""

    def __init__(self, client: httpx.AsyncClient, last_id: str | None = None) -> None:
        self.client = client
        self.last_id = last_id
        self._response: httpx.Response | None = None

    async def open(self) -> None:
        """Connect; returns once the gateway has taken the stream (its position is fixed)."""
        deadline = time.monotonic() + RECONNECT_PATIENCE
        while True:
            headers = {"Accept": "text/event-stream"}
            if self.last_id is not None:
                headers["Last-Event-ID"] = self.last_id
            request = self.client.build_request("GET", "/v1/events", headers=headers)
            wait = 1.0
            try:
                response = await self.client.send(request, stream=True)
            except httpx.TransportError as error:
                if time.monotonic() > deadline:
                    raise unreachable(str(self.client.base_url), error) from None
            else:
                if response.status_code == 200:
                    self._response = response
                    return
                await response.aread()
                await response.aclose()
                # Too many streams, or the gateway not ready yet: both say when to try again.
                if response.status_code not in (429, 503) or time.monotonic() > deadline:
                    raise failure_of(response)
                wait = float(response.headers.get("Retry-After", "1"))
            await asyncio.sleep(min(wait, 5.0))

    async def events(self) -> AsyncGenerator[Event, None]:
        while True:
            if self._response is None:
                await self.open()
            assert self._response is not None
            parser = FrameParser()
            lines = self._response.aiter_lines()
            try:
                while True:
                    try:
                        line = await asyncio.wait_for(anext(lines), SILENCE_SECONDS)
                    except (StopAsyncIteration, TimeoutError):
                        break
                    event = parser.feed(line)
                    if event is not None:
                        self.last_id = event.id
                        yield event
            except httpx.TransportError:
                pass  # the connection broke: resume from the last event seen
            finally:
                await self.close()

    async def close(self) -> None:
        if self._response is not None:
            response, self._response = self._response, None
            await response.aclose()
