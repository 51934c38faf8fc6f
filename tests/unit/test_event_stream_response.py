"""GET /v1/events' response as an ASGI server drives it, over the event hub on the in-memory feed
of test_event_hub: the frames a client reads, and each way a stream ends (its token lapsing, its
client leaving, the server stopping) giving its slot back, with last words where the server ends
it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from uuid import uuid4

from sse_starlette.sse import AppStatus

from services.gateway.event_hub import EventHub
from services.gateway.repository.identity import User
from services.gateway.routes.events import EventStreamResponse
from tests.unit.test_event_hub import MemoryFeed, started

TOKEN = b"alice's token"


class Client:
    """The ASGI server's side of one request: what was sent, and a client that may leave."""

    def __init__(self) -> None:
        self.status: int | None = None
        self.bodies: list[tuple[bytes, bool]] = []
        self.leaves = asyncio.Event()
        self._sent = asyncio.Event()

    async def send(self, message: dict) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        elif message["type"] == "http.response.body":
            self.bodies.append((message["body"], message["more_body"]))
        self._sent.set()

    async def receive(self) -> dict:
        await self.leaves.wait()
        return {"type": "http.disconnect"}

    @property
    def text(self) -> str:
        return b"".join(body for body, _ in self.bodies).decode()

    async def until(self, condition: Callable[[], bool]) -> None:
        async with asyncio.timeout(5):
            while not condition():
                self._sent.clear()
                await self._sent.wait()


async def serve(hub: EventHub) -> tuple[Client, asyncio.Task[None]]:
    client = Client()
    response = EventStreamResponse(hub, User(uuid4(), "alice", "user"), TOKEN, None)
    scope = {"type": "http", "method": "GET"}
    serving = asyncio.create_task(response(scope, client.receive, client.send))
    await client.until(lambda: client.text.startswith(": connected\n\n"))
    return client, serving


async def ended(serving: asyncio.Task[None]) -> None:
    async with asyncio.timeout(5):
        await serving


async def test_events_are_framed_with_their_feed_number_and_topic_and_lf_lines() -> None:
    feed = MemoryFeed()
    hub = await started(feed)
    client, serving = await serve(hub)
    assert client.status == 200

    feed.append("bob", "alice")
    await hub.tick()
    await client.until(lambda: "data: " in client.text)

    assert client.text == (': connected\n\nid: 2\nevent: instance.rejected\ndata: {"n": 2}\n\n')
    client.leaves.set()
    await ended(serving)


async def test_a_client_that_leaves_frees_its_slot_without_last_words() -> None:
    feed = MemoryFeed()
    hub = await started(feed)
    client, serving = await serve(hub)
    assert list(feed.tokens.values()) == [TOKEN]

    client.leaves.set()
    await ended(serving)

    assert feed.leases == {}
    assert hub.streams == []
    assert client.text == ": connected\n\n"


async def test_a_stream_whose_token_lapsed_says_why_in_its_last_words_and_frees_its_slot() -> None:
    feed = MemoryFeed()
    hub = await started(feed)
    client, serving = await serve(hub)

    feed.invalid.add(TOKEN)
    await hub.renew()
    await ended(serving)

    *_, last_words = (body for body, _ in client.bodies if body)
    assert last_words.startswith(b": closed: ") and b"log in again" in last_words
    assert client.bodies[-1] == (b"", False)
    assert feed.leases == {}


async def test_a_stopping_server_ends_the_stream_with_last_words_and_frees_its_slot() -> None:
    feed = MemoryFeed()
    hub = await started(feed)
    client, serving = await serve(hub)

    # What uvicorn's exit handler sets once sse-starlette has wrapped it (SIGTERM, Ctrl-C).
    AppStatus.should_exit = True
    try:
        await ended(serving)
    finally:
        AppStatus.should_exit = False

    assert client.text.endswith(
        ": this gateway is stopping; reconnect with Last-Event-ID to resume\n\n"
    )
    assert client.bodies[-1] == (b"", False)
    assert feed.leases == {}
