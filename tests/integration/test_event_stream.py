"""GET /v1/events over a real HTTP connection: only the caller's own events, resumable."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import Iterator

import httpx
import pytest

from shared.bus import Bus
from shared.events import InstanceRejected
from tests.infra import Infrastructure
from tests.integration.api import ADMIN_PASSWORD, SESSION_KEY
from tests.processes import answers, free_port, running_process


@pytest.fixture(scope="module")
def gateway(infra: Infrastructure) -> Iterator[tuple[str, str]]:
    port = free_port()
    with infra.isolated() as (amqp_url, database_url):
        env = {
            **os.environ,
            "BOREAS_AMQP_URL": amqp_url,
            "BOREAS_DATABASE_URL": database_url,
            "BOREAS_GATEWAY_PORT": str(port),
            "BOREAS_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "BOREAS_SECRET_KEY": SESSION_KEY,
            "BOREAS_TOKEN_REQUESTS_PER_MINUTE": "1000",
        }
        base = f"http://127.0.0.1:{port}"
        with running_process(
            [sys.executable, "-m", "services.gateway"],
            env=env,
            ready=lambda: answers(f"{base}/readyz", lambda r: r.status_code == 200),
        ):
            yield base, amqp_url


async def token(client: httpx.AsyncClient, username: str, password: str) -> dict[str, str]:
    response = await client.post("/v1/tokens", json={"username": username, "password": password})
    return {"Authorization": f"Bearer {response.json()['token']}"}


async def read_events(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    count: int,
    connected: asyncio.Event | None = None,
) -> list[tuple[int, str, dict]]:
    """Open the stream and collect ``count`` events (id, topic, CloudEvent); ``connected`` is set
    once the server has said it is listening."""
    found: list[tuple[int, str, dict]] = []
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
                if len(found) == count:
                    return found
    return found


async def test_stream_carries_only_the_callers_events_and_resumes(
    gateway: tuple[str, str],
) -> None:
    base, amqp_url = gateway
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        admin = await token(client, "admin", ADMIN_PASSWORD)
        names = {}
        for who in ("alice", "bob"):
            names[who] = f"{who}-{uuid.uuid4().hex[:6]}"
            created = await client.post(
                "/v1/users",
                json={"username": names[who], "password": f"{who}-password-1"},
                headers=admin,
            )
            assert created.status_code == 201
        alice = await token(client, names["alice"], "alice-password-1")

        bus = Bus(amqp_url, source="boreas/quota")
        await bus.connect()

        listening = asyncio.Event()

        async def publish_all() -> list[str]:
            await listening.wait()  # events before the stream attached are not "from now on"
            sent = []
            for i, who in enumerate(["alice", "bob", "alice", "bob", "alice"]):
                event = InstanceRejected(instance_id=uuid.uuid4(), owner=names[who], reason=f"r{i}")
                sent.append((await bus.publish(event)).id)
            return sent

        publishing = asyncio.create_task(publish_all())
        received = await read_events(client, alice, 3, listening)
        sent = await publishing
        assert [e["data"]["owner"] for _, _, e in received] == [names["alice"]] * 3
        # Three instances: each one's events keep their order, the three need not.
        assert sorted(e["id"] for _, _, e in received) == sorted([sent[0], sent[2], sent[4]])
        assert all(topic == "instance.rejected" for _, topic, _ in received)

        # Resume after the first: the two later ones come again, nothing of bob's.
        resumed = await read_events(client, {**alice, "Last-Event-ID": str(received[0][0])}, 2)
        assert [e["id"] for _, _, e in resumed] == [e["id"] for _, _, e in received[1:]]
        bad = await client.get("/v1/events", headers={**alice, "Last-Event-ID": "x"})
        assert bad.status_code == 400
        await bus.close()


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
    gateway: tuple[str, str], last_event_id: str
) -> None:
    base, _ = gateway
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        admin = await token(client, "admin", ADMIN_PASSWORD)
        answer = await client.get(
            "/v1/events", headers={**admin, "Last-Event-ID": last_event_id.encode("latin-1")}
        )
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert "Last-Event-ID" in answer.json()["detail"]


async def test_the_largest_feed_number_is_accepted(gateway: tuple[str, str]) -> None:
    base, _ = gateway
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        admin = await token(client, "admin", ADMIN_PASSWORD)
        headers = {**admin, "Last-Event-ID": str(2**63 - 1)}
        async with client.stream("GET", "/v1/events", headers=headers) as stream:
            assert stream.status_code == 200
            lines = stream.aiter_lines()
            assert await anext(lines) == ": connected"
