"""The consumer runner on a real broker: once-only handling, ordering, and dead-lettering poison."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aio_pika
import pytest

from shared.bus import DEAD_LETTER_EXCHANGE, Bus
from shared.consumer import Subscription, UnitOfWork
from shared.events import EXCHANGE, Envelope, Event, InstanceRejected, InstanceStateChanged
from shared.ordering import OrderKey
from shared.runtime import ServiceRuntime
from shared.testing import EventProbe
from tests.integration.support import first_sighting, rejection, settings_for, throwaway_runtime

MAX_DELIVERIES = 3


class Recorder:
    """A handler that records its effect in SQL and emits a follow-up event through the outbox."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.handled = asyncio.Condition()

    async def __call__(self, event: InstanceRejected, uow: UnitOfWork) -> None:
        await uow.conn.execute("INSERT INTO effects VALUES ($1, $2)", uow.envelope.id, event.reason)
        await uow.publish(rejection(f"echo:{event.reason}"))
        async with self.handled:
            self.calls.append(event.reason)
            self.handled.notify_all()

    async def wait_for(self, reason: str, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout), self.handled:
            await self.handled.wait_for(lambda: reason in self.calls)


class AlwaysFails:
    def __init__(self) -> None:
        self.attempts: list[str] = []

    async def __call__(self, event: InstanceStateChanged, uow: UnitOfWork) -> None:
        self.attempts.append(uow.envelope.id)
        raise ValueError("this handler has a bug")


Service = tuple[ServiceRuntime, "Recorder", "AlwaysFails"]


@pytest.fixture
async def service(
    amqp_url: str, database_url: str, unique: str
) -> AsyncIterator[tuple[ServiceRuntime, Recorder, AlwaysFails]]:
    recorder, failing = Recorder(), AlwaysFails()
    subscriptions = [
        Subscription(InstanceRejected, recorder, name="record", order_by=OrderKey.OWNER),
        Subscription(InstanceStateChanged, failing, name="always_fails", order_by=OrderKey.OWNER),
    ]
    settings = settings_for(amqp_url, database_url, max_deliveries=MAX_DELIVERIES)
    async with throwaway_runtime(f"co_{unique}", settings, subscriptions) as runtime:
        yield runtime, recorder, failing


async def publish_raw(amqp_url: str, routing_key: str, body: bytes, **props: object) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(EXCHANGE, "topic", durable=True)
        await exchange.publish(aio_pika.Message(body, **props), routing_key=routing_key)


async def dead_letters(amqp_url: str, queue: str, count: int, timeout: float = 15) -> list:
    """Wait for ``count`` messages on ``queue``'s dead-letter queue and take them off it."""
    taken: list[aio_pika.abc.AbstractIncomingMessage] = []
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        dlq = await channel.declare_queue(
            f"{queue}.dead-letter", durable=True, arguments={"x-queue-type": "quorum"}
        )
        arrived = asyncio.Event()

        async def take(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            await message.ack()
            taken.append(message)
            if len(taken) >= count:
                arrived.set()

        await dlq.consume(take)
        await asyncio.wait_for(arrived.wait(), timeout)
    return taken


async def test_event_delivered_twice_is_handled_once(
    service: Service, amqp_url: str, probe: EventProbe, unique: str
) -> None:
    runtime, recorder, _ = service
    twice = Envelope.wrap(rejection(f"twice-{unique}"), source="boreas/test")
    await runtime.bus.publish_envelope(twice)
    await runtime.bus.publish_envelope(twice)
    # Handling is in order, so once a later marker is handled the duplicate has been seen too.
    marker = rejection(f"marker-{unique}")
    await runtime.bus.publish(marker)
    await recorder.wait_for(marker.reason)

    assert recorder.calls.count(f"twice-{unique}") == 1
    rows = await runtime.pool.fetchval("SELECT count(*) FROM effects WHERE event_id = $1", twice.id)
    assert rows == 1
    inbox = await runtime.pool.fetchval("SELECT count(*) FROM inbox WHERE event_id = $1", twice.id)
    assert inbox == 1
    await probe.wait_for("instance.rejected", lambda e: e.data["reason"] == f"echo:marker-{unique}")
    assert (
        len(
            probe.matching(
                "instance.rejected", lambda e: e.data["reason"] == f"echo:twice-{unique}"
            )
        )
        == 1
    )


async def test_events_are_handled_in_publish_order(service: Service, unique: str) -> None:
    runtime, recorder, _ = service
    reasons = [f"order-{unique}-{i:03d}" for i in range(40)]
    for reason in reasons:
        await runtime.bus.publish(rejection(reason))
    await recorder.wait_for(reasons[-1])
    assert [r for r in recorder.calls if r.startswith(f"order-{unique}")] == reasons


@pytest.mark.parametrize(
    ("case", "body"),
    [
        ("invalid_json", b"{this is not json"),
        ("not_a_cloudevent", json.dumps({"hello": "world"}).encode()),
        ("unknown_major_version", None),
        ("invalid_data", None),
    ],
)
async def test_undecodable_message_is_dead_lettered_at_once_and_consumption_goes_on(
    service: Service,
    amqp_url: str,
    unique: str,
    case: str,
    body: bytes | None,
) -> None:
    runtime, recorder, _ = service
    if case == "unknown_major_version":
        future = Envelope.wrap(rejection(), source="boreas/test")
        body = future.model_copy(update={"type": "boreas.instance.rejected.v9"}).to_bytes()
    elif case == "invalid_data":
        broken = Envelope.wrap(rejection(), source="boreas/test")
        body = broken.model_copy(update={"data": {"owner": "alice"}}).to_bytes()
    assert body is not None
    marker = f"poison-{case}-{unique}"
    await publish_raw(amqp_url, "instance.rejected", body, message_id=marker)
    after = rejection(f"after-{case}-{unique}")
    await runtime.bus.publish(after)

    [dead] = await dead_letters(amqp_url, f"co_{unique}.record", 1)
    assert dead.body == body
    assert dead.headers["x-first-death-reason"] == "rejected"
    await recorder.wait_for(after.reason)


async def test_handler_that_always_raises_is_dead_lettered_after_bounded_tries(
    service: Service, amqp_url: str, unique: str
) -> None:
    runtime, recorder, failing = service
    doomed = Envelope.wrap(first_sighting(), source="boreas/test")
    await runtime.bus.publish_envelope(doomed)

    [dead] = await dead_letters(amqp_url, f"co_{unique}.always_fails", 1)
    assert json.loads(dead.body)["id"] == doomed.id
    assert dead.headers["x-first-death-reason"] == "rejected"
    assert failing.attempts.count(doomed.id) == MAX_DELIVERIES
    # The failing handler's transaction rolled back each time: no inbox row claims it handled.
    assert (
        await runtime.pool.fetchval("SELECT count(*) FROM inbox WHERE event_id = $1", doomed.id)
        == 0
    )
    # The service's other consumers are unaffected.
    after = rejection(f"after-raise-{unique}")
    await runtime.bus.publish(after)
    await recorder.wait_for(after.reason)


async def test_ordered_handler_gets_a_headers_router_and_single_active_partitions(
    service: Service, amqp_url: str, unique: str
) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        # Passive declarations fail unless the queue and exchange exist as described.
        for partition in range(settings_for(amqp_url, "").partitions):
            await channel.declare_queue(f"co_{unique}.record.{partition}", passive=True)
        await channel.declare_exchange(f"co_{unique}.record", passive=True)
        await channel.declare_exchange(f"co_{unique}.record.unkeyed", passive=True)
        await channel.declare_queue(f"co_{unique}.always_fails.dead-letter", passive=True)
        await channel.declare_exchange(DEAD_LETTER_EXCHANGE, passive=True)
        # Declaring again with other arguments is refused: these are the arguments in force.
        with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed):
            await channel.declare_queue(
                f"co_{unique}.record.0", durable=True, arguments={"x-queue-type": "quorum"}
            )


@pytest.mark.parametrize("order_by", [OrderKey.INSTANCE, None])
async def test_a_topic_a_handler_no_longer_declares_is_unbound_at_start(
    amqp_url: str, database_url: str, unique: str, order_by: OrderKey | None
) -> None:
    """A release in which the handler consumed instance.rejected too, then one in which it does
    not: once the second has started, a rejection no longer reaches the handler's queues."""

    async def handle(_event: Event, _uow: UnitOfWork) -> None:
        pass

    def release(*types: type[Event]) -> list[Subscription]:
        return [Subscription(types, handle, name="follow", order_by=order_by)]

    settings = settings_for(amqp_url, database_url)
    name = f"sb_{unique}"
    async with throwaway_runtime(name, settings, release(InstanceStateChanged, InstanceRejected)):
        pass
    async with throwaway_runtime(name, settings, release(InstanceStateChanged)) as runtime:
        recorded = await runtime.pool.fetch("SELECT routing_key FROM bus_bindings")
    assert [r["routing_key"] for r in recorded] == [InstanceStateChanged.TOPIC]

    # Nobody consumes now: what the broker routes to the handler stays in its queues.
    bus = Bus(amqp_url, source="boreas/test")
    await bus.connect()
    await bus.publish(rejection("no longer wanted"))
    await bus.publish(state_change())
    await bus.close()
    queues = (
        [f"{name}.follow"]
        if order_by is None
        else [f"{name}.follow.{n}" for n in range(settings.partitions)]
    )
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        waiting = 0
        for queue in queues:
            declared = await channel.declare_queue(queue, passive=True)
            waiting += declared.declaration_result.message_count
    assert waiting == 1, "the state change only"


def state_change() -> InstanceStateChanged:
    return InstanceStateChanged(
        instance_id=uuid.uuid4(),
        owner="alice",
        account_id="a",
        provider="simulator",
        provider_instance_id="n-1",
        old_state="pending",
        new_state="running",
        cpus=1,
        memory_mb=512,
        observed_at=datetime.now(UTC),
    )
