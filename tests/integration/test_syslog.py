"""A launch's lifecycle reaches a local syslog receiver as RFC 5424 lines, over UDP and TCP."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from services.notifier import bootstrap
from shared.events import (
    InstanceLaunchRequested,
    InstancePlaced,
    InstanceState,
    InstanceStateChanged,
)
from shared.testing import wait_until
from tests.integration.publishing import connected_bus
from tests.integration.webhooks import notifier_settings

RFC5424 = re.compile(
    r"^<(?P<pri>\d{1,3})>1 (?P<time>\S+) (?P<host>\S+) (?P<app>\S+) (?P<procid>\S+) "
    r"(?P<msgid>\S+) (?P<sd>\[boreas@32473(?: [a-z_]+=\"(?:[^\"\\\]]|\\.)*\")+\]) (?P<msg>.+)$"
)


class Receiver:
    def __init__(self) -> None:
        self.lines: list[str] = []


@pytest.fixture(params=["udp", "tcp"])
async def receiver(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, Receiver]]:
    serve = udp_receiver if request.param == "udp" else tcp_receiver
    async for pair in serve():
        yield pair


async def udp_receiver() -> AsyncIterator[tuple[str, Receiver]]:
    receiver = Receiver()

    class Protocol(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: object) -> None:
            receiver.lines.append(data.decode())

    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        Protocol, local_addr=("127.0.0.1", 0)
    )
    port = transport.get_extra_info("sockname")[1]
    yield f"udp://127.0.0.1:{port}", receiver
    transport.close()


async def tcp_receiver() -> AsyncIterator[tuple[str, Receiver]]:
    receiver = Receiver()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:  # RFC 6587 octet counting: "<length> <message>"
            try:
                length = int((await reader.readuntil(b" ")).strip())
            except (asyncio.IncompleteReadError, ValueError):
                return
            receiver.lines.append((await reader.readexactly(length)).decode())

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"tcp://127.0.0.1:{port}", receiver
    server.close()


def lifecycle(instance_id: uuid.UUID, owner: str) -> list:
    def changed(old: InstanceState | None, new: InstanceState) -> InstanceStateChanged:
        return InstanceStateChanged(
            instance_id=instance_id,
            owner=owner,
            account_id="acct",
            provider="simulator",
            provider_instance_id="sim-9",
            old_state=old,
            new_state=new,
            cpus=2,
            memory_mb=2048,
            observed_at=datetime.now(UTC),
        )

    return [
        InstanceLaunchRequested(
            instance_id=instance_id,
            owner=owner,
            name="web-1",
            image="debian-12",
            cpus=2,
            memory_mb=2048,
        ),
        InstancePlaced(
            instance_id=instance_id,
            owner=owner,
            account_id="acct",
            provider="simulator",
            provider_instance_id="sim-9",
            region="north",
            reason="first choice",
        ),
        changed(InstanceState.PENDING, InstanceState.RUNNING),
        changed(InstanceState.RUNNING, InstanceState.TERMINATED),
    ]


async def test_lifecycle_arrives_as_rfc5424(
    amqp_url: str, database_url: str, receiver: tuple[str, Receiver]
) -> None:
    url, lines = receiver
    notifier = bootstrap.build(notifier_settings(amqp_url, database_url, syslog_url=url))
    instance_id = uuid.uuid4()
    async with notifier:
        async with connected_bus(amqp_url) as bus:
            sent = [await bus.publish(event) for event in lifecycle(instance_id, "alice")]
        mine = lambda: [line for line in lines.lines if str(instance_id) in line]  # noqa: E731
        await wait_until(lambda: len(mine()) == 4, timeout=10, what="four syslog lines")

    parsed = [RFC5424.match(line) for line in mine()]
    assert all(parsed), mine()
    assert [p["msgid"] for p in parsed] == [
        "instance.launch_requested",
        "instance.placed",
        "instance.state_changed",
        "instance.state_changed",
    ]
    assert [f'event_id="{e.id}"' in p["sd"] for p, e in zip(parsed, sent, strict=True)] == [
        True
    ] * 4
    assert all(p["pri"] == "134" and p["app"] == "boreas" for p in parsed)
    assert parsed[2]["msg"] == f"instance {instance_id} pending -> running"
    assert 'owner="alice"' in parsed[3]["sd"]
