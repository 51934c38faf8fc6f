"""The event bus: RabbitMQ through aio-pika, one durable topic exchange ``boreas.events``.

Delivery guarantees of :meth:`Bus.publish`: the message is persistent, published with publisher
confirms (the call returns once the broker has it; a nack or a lost connection raises) and with
``mandatory`` set, so an event that no queue is bound to is logged as ``event_unroutable`` rather
than dropped unseen. Publishing straight from a handler is for ephemeral facts (heartbeats); state
changes go through the transactional outbox (:mod:`shared.outbox`), which calls
:meth:`Bus.publish_envelope` only after the producing transaction committed.

On the wire each envelope is a CloudEvent in the CloudEvents RabbitMQ binding's structured mode,
made by the CloudEvents SDK (:func:`to_amqp`). Every message carries the slot headers of
:mod:`shared.ordering`, which route it to the right partition of each subscriber that needs order.

The connection is robust: after a broker restart aio-pika reconnects, re-declares the topology and
re-attaches consumers; :attr:`Bus.is_connected` tells readiness probes whether it is up now.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aio_pika
import aiormq.exceptions
import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractRobustConnection,
)
from cloudevents.core.v1.event import CloudEvent

from shared.events import (
    CLOUDEVENTS_CONTENT_TYPE,
    EXCHANGE,
    INTERNAL_EXCHANGE,
    Envelope,
    Event,
    exchange_of,
)
from shared.metrics import EVENTS_PUBLISHED, service_of
from shared.ordering import slot_headers

log = structlog.get_logger(__name__)

DEAD_LETTER_EXCHANGE = "boreas.dead-letter"
EXCHANGES = (EXCHANGE, INTERNAL_EXCHANGE)
PUBLISH_TIMEOUT = 10.0

# Errors that mean "the broker is away or the channel was lost", not "this message is wrong".
TRANSIENT_BUS_ERRORS: tuple[type[BaseException], ...] = (
    aiormq.exceptions.AMQPConnectionError,
    aiormq.exceptions.ChannelInvalidStateError,
    aiormq.exceptions.ConnectionClosed,
    aiormq.exceptions.ChannelClosed,
    asyncio.TimeoutError,
    ConnectionError,
)


class Bus:
    """One AMQP connection per process; a channel for publishing, one per consumer for receiving."""

    def __init__(self, url: str, *, source: str) -> None:
        self._url = url
        self.source = source
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}
        self._service = service_of(source)

    async def connect(self) -> None:
        self._connection = await aio_pika.connect_robust(
            self._url, client_properties={"connection_name": self.source}
        )
        self._channel = await self._connection.channel(publisher_confirms=True)
        self._channel.return_callbacks.add(self._on_returned)
        for name in EXCHANGES:
            self._exchanges[name] = await self._channel.declare_exchange(
                name, aio_pika.ExchangeType.TOPIC, durable=True
            )

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()

    @property
    def connection(self) -> AbstractRobustConnection:
        if self._connection is None:
            raise RuntimeError("Bus.connect() has not been awaited")
        return self._connection

    @property
    def is_connected(self) -> bool:
        conn = self._connection
        return conn is not None and not conn.is_closed and conn.connected.is_set()

    async def publish(
        self,
        event: Event,
        *,
        correlation_id: str | None = None,
        expiration: float | None = None,
        mandatory: bool = True,
    ) -> Envelope:
        """Publish outside any transaction; see the module docstring for when that is right."""
        envelope = Envelope.wrap(event, source=self.source, correlation_id=correlation_id)
        await self.publish_envelope(envelope, expiration=expiration, mandatory=mandatory)
        return envelope

    async def publish_envelope(
        self, envelope: Envelope, *, expiration: float | None = None, mandatory: bool = True
    ) -> None:
        if not self._exchanges:
            raise RuntimeError("Bus.connect() has not been awaited")
        await self._exchanges[exchange_of(envelope.topic)].publish(
            to_amqp(envelope, expiration=expiration),
            routing_key=envelope.topic,
            mandatory=mandatory,
            timeout=PUBLISH_TIMEOUT,
        )
        EVENTS_PUBLISHED.labels(self._service, envelope.topic).inc()

    def _on_returned(self, _channel: object, message: AbstractIncomingMessage) -> None:
        log.warning(
            "event_unroutable",
            topic=message.routing_key,
            event_id=message.message_id,
            reply=getattr(message, "reply_text", None),
        )


def to_amqp(envelope: Envelope, *, expiration: float | None = None) -> aio_pika.Message:
    """``envelope`` as the persistent AMQP message every Boreas event travels in.

    Body and content type are the CloudEvents RabbitMQ binding's structured mode: the JSON
    CloudEvent the envelope serializes to (tests/unit/test_amqp_binding.py holds it equal to
    the SDK's own encoding; serializing through the SDK cost a third of each publish). The SDK
    still checks the attributes, so an envelope that breaks the CloudEvents spec is refused.
    The AMQP properties repeat the event's id, type, source, time and correlation id for tools
    that read only properties (dead-letter listings, the management UI); the headers are the
    ordering slots and the event's W3C trace context (``traceparent``, ``tracestate``), for
    tracing tools that read headers only.
    """
    CloudEvent(envelope.model_dump(exclude={"data"}, exclude_none=True), envelope.data)
    headers: dict[str, Any] = slot_headers(envelope.data, envelope.subject, envelope.id)
    for name, value in _trace_of(envelope):
        if value:
            headers[name] = value
    return aio_pika.Message(
        envelope.to_bytes(),
        content_type=CLOUDEVENTS_CONTENT_TYPE,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=envelope.id,
        type=envelope.type,
        app_id=envelope.source,
        timestamp=envelope.time,
        correlation_id=envelope.correlationid,
        expiration=expiration,
        headers=headers,
    )


def _trace_of(envelope: Envelope) -> tuple[tuple[str, str | None], ...]:
    return (("traceparent", envelope.traceparent), ("tracestate", envelope.tracestate))
