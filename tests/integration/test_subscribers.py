"""An external subscriber can read Boreas' events and do nothing else."""

from __future__ import annotations

import uuid
from urllib.parse import unquote, urlsplit

import aio_pika
import pytest
from aiormq.exceptions import ChannelAccessRefused

from services.notifier.subscribers import create
from shared.bus import Bus
from shared.events import EXCHANGE
from tests.infra import Infrastructure
from tests.integration.support import rejection


async def test_subscriber_reads_events_and_is_refused_everything_else(
    infra: Infrastructure,
) -> None:
    vhost = unquote(urlsplit(infra.amqp_url).path[1:])
    name = f"chargeback-{uuid.uuid4().hex[:6]}"
    subscriber = create(name, vhost, infra.rabbitmqctl)
    try:
        host = urlsplit(infra.amqp_url)
        url = subscriber.amqp_url(host.hostname or "127.0.0.1", host.port or 5672)
        # Boreas' own internal queue exists, as it would in production.
        bus = Bus(infra.amqp_url, source="boreas/test")
        await bus.connect()
        internal = await (await bus.connection.channel()).declare_queue(
            f"quota.internal_{uuid.uuid4().hex[:6]}", durable=True
        )

        connection = await aio_pika.connect(url)
        async with connection:
            channel = await connection.channel()
            exchange = await channel.get_exchange(EXCHANGE, ensure=False)
            queue = await channel.declare_queue(f"sub.{name}.instances", auto_delete=True)
            await queue.bind(exchange, routing_key="instance.#")

            event = rejection(f"for-{name}")
            await bus.publish(event)
            message = await queue.get(timeout=10, fail=True)
            assert f"for-{name}".encode() in message.body
            await message.ack()

            with pytest.raises(ChannelAccessRefused, match="ACCESS_REFUSED"):
                publisher = await connection.channel()
                events = await publisher.get_exchange(EXCHANGE, ensure=False)
                await events.publish(aio_pika.Message(b"forged"), routing_key="instance.placed")
                await publisher.close()  # the refusal arrives as the channel closes

            with pytest.raises(ChannelAccessRefused, match="ACCESS_REFUSED"):
                reader = await connection.channel()
                await reader.declare_queue(internal.name, passive=True)
                stolen = await reader.get_queue(internal.name, ensure=False)
                await stolen.get(timeout=5, fail=False)

            with pytest.raises(ChannelAccessRefused, match="ACCESS_REFUSED"):
                squatter = await connection.channel()
                await squatter.declare_queue("gateway.record_heartbeat_copy", durable=True)
        await bus.close()
    finally:
        infra.rabbit("delete_user", subscriber.username)


def test_names_are_checked() -> None:
    with pytest.raises(ValueError, match="subscriber name"):
        create("Bad Name!", "/", ["false"])
