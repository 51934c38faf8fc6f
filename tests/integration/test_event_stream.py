"""GET /v1/events over a real HTTP connection: only the caller's own events, resumable, at most
BOREAS_EVENT_STREAMS_PER_USER streams per user, a closed one's slot free again at once, and a
stream whose token stops being valid (logout, a disabled user, expiry) ended by the server."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass

import asyncpg
import httpx
import pytest

from services.gateway import security
from services.gateway.event_hub import RENEW_SECONDS
from shared.events import InstanceRejected
from shared.testing import wait_until
from tests.infra import Infrastructure
from tests.integration.api import ADMIN_PASSWORD, SESSION_KEY
from tests.integration.publishing import connected_bus
from tests.processes import gateway_process

STREAMS_PER_USER = 3
# The server's keep-alive comment comes every 15 s: a closed client's slot must be free well
# before that, so it is noticed by itself rather than by a failing write.
SLOT_FREED_WITHIN = 5.0
# The hub checks its streams' tokens at each renewal: a stream whose token lapsed ends by the next.
ENDS_WITHIN = RENEW_SECONDS + 5.0


@dataclass(frozen=True)
class Gateway:
    """The gateway process's base URL, and the broker and database it runs against."""

    base: str
    amqp_url: str
    database_url: str


@pytest.fixture(scope="module")
def gateway(infra: Infrastructure) -> Iterator[Gateway]:
    with (
        infra.isolated() as (amqp_url, database_url),
        gateway_process(
            amqp_url,
            database_url,
            admin_password=ADMIN_PASSWORD,
            settings={
                "BOREAS_SECRET_KEY": SESSION_KEY,
                "BOREAS_TOKEN_REQUESTS_PER_MINUTE": "1000",
                "BOREAS_EVENT_STREAMS_PER_USER": str(STREAMS_PER_USER),
            },
        ) as base,
    ):
        yield Gateway(base, amqp_url, database_url)


@pytest.fixture
async def client(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    # Reads may wait through a renewal of the hub's tokens (ENDS_WITHIN) for a stream to end.
    async with httpx.AsyncClient(base_url=gateway.base, timeout=30) as client:
        yield client


async def token(client: httpx.AsyncClient, username: str, password: str) -> dict[str, str]:
    response = await client.post("/v1/tokens", json={"username": username, "password": password})
    return {"Authorization": f"Bearer {response.json()['token']}"}


async def new_user(client: httpx.AsyncClient, prefix: str) -> tuple[str, dict[str, str]]:
    name, password = f"{prefix}-{uuid.uuid4().hex[:6]}", f"{prefix}-password-1"
    admin = await token(client, "admin", ADMIN_PASSWORD)
    created = await client.post(
        "/v1/users", json={"username": name, "password": password}, headers=admin
    )
    assert created.status_code == 201, created.text
    return name, await token(client, name, password)


async def publish_rejections(amqp_url: str, owners: list[str]) -> list[str]:
    """One InstanceRejected per owner in ``owners``, each of a new instance, as the quota service
    would publish it; their event ids, in order."""
    async with connected_bus(amqp_url, "boreas/quota") as bus:
        sent = []
        for i, owner in enumerate(owners):
            event = InstanceRejected(instance_id=uuid.uuid4(), owner=owner, reason=f"r{i}")
            sent.append((await bus.publish(event)).id)
        return sent


Found = list[tuple[int, str, dict]]


async def collect(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    enough: int | Callable[[Found], bool],
    connected: asyncio.Event | None = None,
) -> Found:
    """Open the stream and collect its events (id, topic, CloudEvent) until ``enough`` of them
    came (a number, or a test of those found); ``connected`` is set once the server has said it
    is listening."""

    def done(found: Found) -> bool:
        return len(found) == enough if isinstance(enough, int) else enough(found)

    found: Found = []
    async with asyncio.timeout(15), client.stream("GET", "/v1/events", headers=headers) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        block: dict[str, str] = {}
        async for line in stream.aiter_lines():
            if line == ": connected" and connected is not None:
                connected.set()
            if line.startswith(("id:", "event:", "data:")):
                key, _, value = line.partition(": ")
                block[key] = value
            elif line == "" and "data" in block:
                found.append((int(block["id"]), block["event"], json.loads(block["data"])))
                block = {}
                if done(found):
                    return found
    return found


async def test_stream_carries_only_the_callers_events_and_resumes(
    client: httpx.AsyncClient,
    gateway: Gateway,
) -> None:
    alice_name, alice = await new_user(client, "alice")
    bob_name, _ = await new_user(client, "bob")
    listening = asyncio.Event()

    async def publish_all() -> list[str]:
        await listening.wait()  # events before the stream attached are not "from now on"
        return await publish_rejections(gateway.amqp_url, [alice_name, bob_name] * 2 + [alice_name])

    publishing = asyncio.create_task(publish_all())
    received = await collect(client, alice, 3, listening)
    sent = await publishing
    assert [e["data"]["owner"] for _, _, e in received] == [alice_name] * 3
    # Three instances: each one's events keep their order, the three need not.
    assert sorted(e["id"] for _, _, e in received) == sorted([sent[0], sent[2], sent[4]])
    assert all(topic == "instance.rejected" for _, topic, _ in received)

    # Resume after the first: the two later ones come again, nothing of bob's.
    resumed = await collect(client, {**alice, "Last-Event-ID": str(received[0][0])}, 2)
    assert [e["id"] for _, _, e in resumed] == [e["id"] for _, _, e in received[1:]]
    bad = await client.get("/v1/events", headers={**alice, "Last-Event-ID": "x"})
    assert bad.status_code == 400


@pytest.mark.parametrize(
    "last_event_id",
    [
        "²",  # byte 0xB2 read as Latin-1: a digit to str.isdigit(), not to int()
        "¹",
        "99999999999999999999",  # beyond bigint: cut the stream off with a traceback
        "9223372036854775808",
        "-1",
        "+1",
        "",
    ],
)
async def test_a_last_event_id_that_is_no_feed_number_is_a_400_problem(
    client: httpx.AsyncClient, last_event_id: str
) -> None:
    admin = await token(client, "admin", ADMIN_PASSWORD)
    answer = await client.get(
        "/v1/events", headers={**admin, "Last-Event-ID": last_event_id.encode("latin-1")}
    )
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert "Last-Event-ID" in answer.json()["detail"]


async def test_the_largest_feed_number_is_accepted(client: httpx.AsyncClient) -> None:
    admin = await token(client, "admin", ADMIN_PASSWORD)
    headers = {**admin, "Last-Event-ID": str(2**63 - 1)}
    async with client.stream("GET", "/v1/events", headers=headers) as stream:
        assert stream.status_code == 200
        lines = stream.aiter_lines()
        assert await anext(lines) == ": connected"


async def open_stream(client: httpx.AsyncClient, headers: dict[str, str]) -> httpx.Response:
    """The answer to GET /v1/events, its body unread unless it is an error (then read)."""
    response = await client.send(
        client.build_request("GET", "/v1/events", headers=headers), stream=True
    )
    if response.status_code != 200:
        await response.aread()
        await response.aclose()
    return response


class OpenStream:
    """A stream that said it is listening; its lines are read by one iterator, kept here: a
    dropped iterator is finalized, and that closes the connection."""

    def __init__(self, response: httpx.Response) -> None:
        assert response.status_code == 200, response.text
        self.response, self.lines = response, response.aiter_lines()

    @classmethod
    async def connected(cls, client: httpx.AsyncClient, headers: dict[str, str]) -> OpenStream:
        """A new stream, once the server has said it is listening."""
        return await cls(await open_stream(client, headers)).listening()

    async def listening(self) -> OpenStream:
        assert await anext(self.lines) == ": connected"
        return self

    async def next_event(self) -> dict:
        """The CloudEvent of the next event the stream sends."""
        async for line in self.lines:
            if line.startswith("data: "):
                return json.loads(line.removeprefix("data: "))
        raise AssertionError("the stream ended")

    async def comments_to_the_end(self) -> list[str]:
        """The comments the stream sends until the server ends it."""
        return [line async for line in self.lines if line.startswith(":")]

    async def close(self) -> None:
        await self.lines.aclose()
        await self.response.aclose()


async def test_streams_past_the_cap_are_refused_until_one_is_closed(
    client: httpx.AsyncClient,
) -> None:
    async with AsyncExitStack() as open_:

        async def connect(headers: dict[str, str]) -> OpenStream:
            stream = await OpenStream.connected(client, headers)
            open_.push_async_callback(stream.close)
            return stream

        _, carol = await new_user(client, "carol")
        streams = [await connect(carol) for _ in range(STREAMS_PER_USER)]

        refused = await open_stream(client, carol)
        assert refused.status_code == 429, refused.status_code
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert int(refused.headers["Retry-After"]) > 0
        assert str(STREAMS_PER_USER) in refused.json()["detail"]

        # The cap is per user: someone else still gets a stream.
        _, dave = await new_user(client, "dave")
        await connect(dave)

        # The client goes away without a word: the server must notice by itself (no write of
        # its own is due for 15 s) and free the slot.
        await streams[0].close()

        async def reopened() -> httpx.Response | None:
            stream = await open_stream(client, carol)
            return stream if stream.status_code == 200 else None

        again = OpenStream(await wait_until(reopened, timeout=SLOT_FREED_WITHIN, what="a slot"))
        open_.push_async_callback(again.close)
        await again.listening()
        assert (await open_stream(client, carol)).status_code == 429


async def test_each_users_streams_carry_their_own_events_live_and_resumed(
    client: httpx.AsyncClient,
    gateway: Gateway,
) -> None:
    erin, erin_headers = await new_user(client, "erin")
    frank, frank_headers = await new_user(client, "frank")
    admin = await token(client, "admin", ADMIN_PASSWORD)

    def three_each(found: Found) -> bool:
        owners = [e["data"]["owner"] for _, _, e in found]
        return owners.count(erin) >= 3 and owners.count(frank) >= 3

    streams: dict[str, tuple[dict[str, str], int | Callable[[Found], bool]]] = {
        "erin": (erin_headers, 3),  # two streams of erin's: each gets all of hers
        "erin again": (erin_headers, 3),
        "frank": (frank_headers, 3),
        "admin": (admin, three_each),
    }
    listening = {name: asyncio.Event() for name in streams}
    readers = {
        name: asyncio.create_task(collect(client, headers, enough, listening[name]))
        for name, (headers, enough) in streams.items()
    }
    for event in listening.values():
        await event.wait()

    ids = await publish_rejections(gateway.amqp_url, [erin, frank] * 3)
    sent = {erin: ids[0::2], frank: ids[1::2]}

    live = {name: await reader for name, reader in readers.items()}
    assert sorted(e["id"] for _, _, e in live["erin"]) == sorted(sent[erin])
    assert sorted(e["id"] for _, _, e in live["frank"]) == sorted(sent[frank])
    assert live["erin again"] == live["erin"]
    assert {e["id"] for _, _, e in live["admin"]} >= set(ids)

    # Resumed from before all of them, and after the first: the backlog is theirs alone.
    for name, headers in (("erin", erin_headers), ("frank", frank_headers)):
        numbers = [n for n, _, _ in live[name]]
        replayed = await collect(client, {**headers, "Last-Event-ID": "0"}, 3)
        assert replayed == live[name]
        after_first = {**headers, "Last-Event-ID": str(numbers[0])}
        rest = await collect(client, after_first, 2)
        assert rest == live[name][1:]


def closed_for_its_token(comments: list[str]) -> bool:
    return bool(comments) and comments[-1].startswith(": closed: ") and "log in" in comments[-1]


async def test_disabling_a_user_ends_their_open_stream(client: httpx.AsyncClient) -> None:
    name, gina = await new_user(client, "gina")
    stream = await OpenStream.connected(client, gina)
    try:
        admin = await token(client, "admin", ADMIN_PASSWORD)
        disabled = await client.patch(f"/v1/users/{name}", json={"disabled": True}, headers=admin)
        assert disabled.status_code == 200, disabled.text
        async with asyncio.timeout(ENDS_WITHIN):
            comments = await stream.comments_to_the_end()
    finally:
        await stream.close()
    assert closed_for_its_token(comments), comments


async def test_logging_out_ends_the_stream_of_that_token_and_no_other(
    client: httpx.AsyncClient,
    gateway: Gateway,
) -> None:
    async with AsyncExitStack() as open_:
        name, first = await new_user(client, "hana")
        second = await token(client, name, "hana-password-1")
        streams = []
        for headers in (first, second):
            stream = await OpenStream.connected(client, headers)
            open_.push_async_callback(stream.close)
            streams.append(stream)

        logged_out = await client.delete("/v1/tokens/current", headers=first)
        assert logged_out.status_code == 204, logged_out.text
        async with asyncio.timeout(ENDS_WITHIN):
            comments = await streams[0].comments_to_the_end()
        assert closed_for_its_token(comments), comments

        # The renewal that ended the first stream checked the second's token too: it goes on.
        [published] = await publish_rejections(gateway.amqp_url, [name])
        async with asyncio.timeout(ENDS_WITHIN):
            assert (await streams[1].next_event())["id"] == published


async def test_a_stream_ends_when_its_token_expires(
    client: httpx.AsyncClient, gateway: Gateway
) -> None:
    _, ivan = await new_user(client, "ivan")
    stream = await OpenStream.connected(client, ivan)
    try:
        # This gateway's tokens live 12 hours: this one's time is made to run out now.
        digest = security.token_digest(ivan["Authorization"].removeprefix("Bearer "))
        conn = await asyncpg.connect(gateway.database_url)
        try:
            expired = await conn.execute(
                "UPDATE gateway.tokens SET expires_at = now() WHERE digest = $1", digest
            )
        finally:
            await conn.close()
        assert expired == "UPDATE 1"
        async with asyncio.timeout(ENDS_WITHIN):
            comments = await stream.comments_to_the_end()
    finally:
        await stream.close()
    assert closed_for_its_token(comments), comments
