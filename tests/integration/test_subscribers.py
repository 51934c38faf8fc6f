"""An external subscriber can read Boreas' events and do nothing else."""

from __future__ import annotations

import uuid
from urllib.parse import unquote, urlsplit

import aio_pika
import pytest
from aiormq.exceptions import ChannelAccessRefused

from services.notifier.subscribers import create
from shared.bus import Bus
from shared.events import EXCHANGE, INTERNAL_EXCHANGE, PUBLIC
from shared.runtime import ServiceRuntime
from shared.testing import EventProbe
from tests.infra import Infrastructure
from tests.integration.api import Api
from tests.integration.stack import simulator_account
from tests.integration.support import rejection
from tests.integration.test_lifecycle import drive_through_lifecycle


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


async def test_a_subscriber_bound_to_everything_gets_public_topics_only(
    infra: Infrastructure,
    api: Api,
    clouds_side: tuple[ServiceRuntime, ServiceRuntime],
    simulator_url: str,
    probe: EventProbe,
) -> None:
    vhost = unquote(urlsplit(infra.amqp_url).path[1:])
    name = f"audit-{uuid.uuid4().hex[:6]}"
    subscriber = create(name, vhost, infra.rabbitmqctl)
    host = urlsplit(infra.amqp_url)
    connection = await aio_pika.connect(
        subscriber.amqp_url(host.hostname or "127.0.0.1", host.port or 5672)
    )
    try:
        channel = await connection.channel()
        everything = await channel.declare_queue(f"sub.{name}.everything", auto_delete=True)
        await everything.bind(await channel.get_exchange(EXCHANGE, ensure=False), "#")

        admin = await api.admin()
        owner, headers = await api.new_user("olive")
        # An account change, a grants change, a quota change and a webhook change...
        account = await simulator_account(api, simulator_url, [owner], followers=clouds_side)
        regrant = await api.client.put(
            f"/v1/provider-accounts/{account['id']}/grants",
            json={"grants": [owner]},
            headers=admin,
        )
        assert regrant.status_code == 200, regrant.text
        limits = {"instances": 5, "cpus": 20, "memory_mb": 65536}
        quota = await api.client.put(f"/v1/quotas/{owner}", json=limits, headers=admin)
        assert quota.status_code == 200, quota.text
        hook = await api.client.post(
            "/v1/webhooks",
            json={"url": "http://127.0.0.1:9/hook?token=private", "topics": ["#"]},
            headers=headers,
        )
        assert hook.status_code == 201, hook.text
        # ...and an instance's whole life, stop, start and terminate included.
        launched = (await api.launch(headers, placement={"account": account["id"]})).json()
        await drive_through_lifecycle(api, probe, owner, headers, launched["id"])

        internal = {
            "provider_account.changed",
            "quota.limits_set",
            "webhook.changed",
            "instance.launch_admitted",
            "instance.action_requested",
        }
        for topic in internal:  # they happened, on the internal exchange
            await probe.wait_for(topic, timeout=10)

        seen: list[str] = []
        terminated = False
        while not terminated:
            message = await everything.get(timeout=10, fail=True)
            await message.ack()
            assert b"private" not in message.body and b"sealed" not in message.body
            seen.append(message.routing_key or "")
            terminated = (
                message.routing_key == "instance.state_changed"
                and b'"new_state":"terminated"' in message.body.replace(b" ", b"")
            )
        public = {cls.TOPIC for cls in PUBLIC}
        assert set(seen) <= public, f"internal topics reached a subscriber: {set(seen) - public}"
        assert {"instance.launch_requested", "instance.placed", "quota.usage_changed"} <= set(seen)
    finally:
        await connection.close()
        infra.rabbit("delete_user", subscriber.username)


async def test_a_subscriber_cannot_bind_to_the_internal_exchange(infra: Infrastructure) -> None:
    vhost = unquote(urlsplit(infra.amqp_url).path[1:])
    name = f"snoop-{uuid.uuid4().hex[:6]}"
    subscriber = create(name, vhost, infra.rabbitmqctl)
    bus = Bus(infra.amqp_url, source="boreas/test")
    await bus.connect()  # declares both exchanges, as every service does
    host = urlsplit(infra.amqp_url)
    try:
        connection = await aio_pika.connect(
            subscriber.amqp_url(host.hostname or "127.0.0.1", host.port or 5672)
        )
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(f"sub.{name}.internal", auto_delete=True)
            internal = await channel.get_exchange(INTERNAL_EXCHANGE, ensure=False)
            with pytest.raises(ChannelAccessRefused, match="ACCESS_REFUSED"):
                await queue.bind(internal, "#")
    finally:
        await bus.close()
        infra.rabbit("delete_user", subscriber.username)
