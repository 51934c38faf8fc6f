"""How an envelope goes on the bus: the CloudEvents RabbitMQ binding in structured mode, the wire
format of the contract (a JSON CloudEvent, `application/cloudevents+json`), with the AMQP
properties and ordering headers Boreas adds."""

import json
import uuid

import aio_pika
import pytest
from cloudevents.core.bindings import rabbitmq
from cloudevents.core.exceptions import CloudEventValidationError
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from shared.asyncapi import build
from shared.bus import to_amqp
from shared.events import (
    CLOUDEVENTS_CONTENT_TYPE,
    PUBLIC,
    Envelope,
    InstanceRejected,
    decode,
    parse_envelope,
)
from shared.ordering import HEADER_PREFIX, OrderKey


def rejection_envelope() -> Envelope:
    event = InstanceRejected(instance_id=uuid.uuid4(), owner="åsa", reason="cpus limit 4 reached")
    return Envelope.wrap(event, source="boreas/quota", correlation_id="req-7")


def test_the_body_is_the_structured_cloudevent_of_the_contract() -> None:
    envelope = rejection_envelope()
    message = to_amqp(envelope)

    assert message.content_type == CLOUDEVENTS_CONTENT_TYPE
    # The same JSON document the envelope serializes to (webhooks and the event stream carry
    # that one): only insignificant whitespace and string escapes may differ.
    assert json.loads(message.body) == json.loads(envelope.to_bytes())
    assert parse_envelope(message.body) == envelope
    assert decode(parse_envelope(message.body)) == decode(envelope)


@pytest.mark.parametrize("cls", PUBLIC, ids=lambda cls: cls.TOPIC)
def test_every_public_event_goes_out_as_the_sdk_would_encode_it(cls: type) -> None:
    """The body is serialized without the SDK (it cost a third of each publish): the SDK's
    structured encoding of the same event is the reference it must equal."""
    [example] = build()["components"]["messages"][cls.__name__]["examples"]
    envelope = Envelope.wrap(
        cls.model_validate(example["payload"]["data"]),
        source="boreas/test",
        correlation_id="req-ü",
        trace={"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
    )
    message = to_amqp(envelope)

    attributes = envelope.model_dump(exclude={"data"}, exclude_none=True)
    reference = rabbitmq.to_structured(CloudEvent(attributes, envelope.data), JSONFormat())
    assert message.content_type == reference.content_type
    assert json.loads(message.body) == json.loads(reference.body)
    assert reference.headers == {}  # structured mode puts everything in the body


def test_amqp_properties_repeat_the_event_and_headers_carry_its_slots() -> None:
    envelope = rejection_envelope()
    message = to_amqp(envelope, expiration=30)

    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.message_id == envelope.id
    assert message.type == "boreas.instance.rejected.v1"
    assert message.app_id == "boreas/quota"
    assert message.correlation_id == "req-7"
    assert message.timestamp == envelope.time
    assert message.expiration == 30
    slots = {name for name in message.headers if name.startswith(HEADER_PREFIX)}
    assert {name.removeprefix(HEADER_PREFIX).rsplit("-", 1)[0] for name in slots} == {
        key.value for key in OrderKey
    }


def test_a_consumer_on_the_cloudevents_sdk_reads_what_the_bus_sends() -> None:
    envelope = rejection_envelope()
    message = to_amqp(envelope)
    wire = rabbitmq.RabbitMQMessage(
        headers={}, content_type=message.content_type, body=message.body
    )

    read = rabbitmq.from_rabbitmq_event(wire)

    assert read.get_id() == envelope.id
    assert read.get_type() == envelope.type
    assert read.get_source() == envelope.source
    assert read.get_subject() == envelope.subject
    assert read.get_time() == envelope.time
    assert read.get_extension("dataversion") == "1.0"
    assert read.get_extension("correlationid") == "req-7"
    assert read.get_data() == envelope.data


def test_an_envelope_that_breaks_the_cloudevents_spec_is_not_published() -> None:
    broken = rejection_envelope().model_copy(update={"subject": ""})
    with pytest.raises(CloudEventValidationError):
        to_amqp(broken)
