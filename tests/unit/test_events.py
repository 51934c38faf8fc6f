"""The catalog's envelope: what goes on the wire and what a consumer refuses."""

import json
import uuid
from datetime import UTC, datetime

import pydantic
import pytest

from shared.events import (
    Envelope,
    InstanceLaunchAdmitted,
    InstanceLaunchRequested,
    InstanceRejected,
    InstanceState,
    InstanceStateChanged,
    Placement,
    ServiceHeartbeat,
    UndecodableEvent,
    decode,
    parse_envelope,
)

INSTANCE = uuid.UUID("6a0f4c1e-7f52-4f3c-9a57-1d2f0b8e9c10")


def rejected() -> InstanceRejected:
    return InstanceRejected(instance_id=INSTANCE, owner="alice", reason="instances limit 5 reached")


def test_envelope_is_a_structured_cloudevent() -> None:
    wire = json.loads(Envelope.wrap(rejected(), source="boreas/quota").to_bytes())

    assert wire["specversion"] == "1.0"
    assert wire["type"] == "boreas.instance.rejected.v1"
    assert wire["source"] == "boreas/quota"
    assert wire["subject"] == str(INSTANCE)
    assert wire["dataversion"] == "1.0"
    assert wire["data"] == {
        "instance_id": str(INSTANCE),
        "owner": "alice",
        "reason": "instances limit 5 reached",
    }
    uuid.UUID(wire["id"])
    assert datetime.fromisoformat(wire["time"]).tzinfo is not None


def test_round_trip_gives_the_same_event_and_topic() -> None:
    envelope = Envelope.wrap(rejected(), source="boreas/quota", correlation_id="req-1")
    parsed = parse_envelope(envelope.to_bytes())

    assert parsed.topic == "instance.rejected"
    assert parsed.correlationid == "req-1"
    assert decode(parsed) == rejected()


def test_events_without_an_instance_have_no_subject() -> None:
    now = datetime.now(UTC)
    beat = ServiceHeartbeat(service="quota", replica="r1", started_at=now, sent_at=now)
    assert "subject" not in json.loads(Envelope.wrap(beat, source="boreas/quota").to_bytes())


def test_consumers_ignore_fields_they_do_not_know() -> None:
    envelope = Envelope.wrap(rejected(), source="boreas/quota")
    newer = envelope.model_copy(update={"data": {**envelope.data, "added_in_1_1": "x"}})
    assert decode(newer) == rejected()


def test_events_are_immutable() -> None:
    with pytest.raises(pydantic.ValidationError):
        rejected().reason = "changed"  # type: ignore[misc]


def test_state_changed_carries_states_as_contract_strings() -> None:
    event = InstanceStateChanged(
        instance_id=INSTANCE,
        owner="alice",
        account_id="acct-1",
        provider="simulator",
        provider_instance_id="sim-42",
        old_state=InstanceState.PENDING,
        new_state=InstanceState.RUNNING,
        cpus=2,
        memory_mb=2048,
        observed_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    data = Envelope.wrap(event, source="boreas/poller").data
    assert (data["old_state"], data["new_state"]) == ("pending", "running")


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        (b"{not json", "not a Boreas CloudEvent"),
        (b'{"hello": "world"}', "not a Boreas CloudEvent"),
        (b"\xff\xfe", "not a Boreas CloudEvent"),
    ],
)
def test_bytes_that_are_no_cloudevent_are_undecodable(body: bytes, complaint: str) -> None:
    with pytest.raises(UndecodableEvent, match=complaint):
        parse_envelope(body)


def _with_type(ce_type: str, data: dict | None = None) -> Envelope:
    envelope = Envelope.wrap(rejected(), source="boreas/quota")
    return envelope.model_copy(update={"type": ce_type, "data": data or envelope.data})


def test_unknown_major_version_of_a_known_topic_is_undecodable() -> None:
    with pytest.raises(UndecodableEvent, match=r"unsupported major version of instance\.rejected"):
        decode(_with_type("boreas.instance.rejected.v2"))


def test_unknown_type_is_undecodable() -> None:
    with pytest.raises(UndecodableEvent, match="unknown event type"):
        decode(_with_type("boreas.volume.attached.v1"))


def test_invalid_data_is_undecodable_and_says_which_field() -> None:
    with pytest.raises(UndecodableEvent, match="instance_id"):
        decode(_with_type("boreas.instance.rejected.v1", {"owner": "a", "reason": "r"}))


def test_an_admission_carries_its_request_field_for_field() -> None:
    requested = InstanceLaunchRequested(
        instance_id=INSTANCE,
        owner="alice",
        name="web-1",
        image="ubuntu-24.04",
        cpus=2,
        memory_mb=2048,
        placement=Placement(provider="ec2", region="eu-north-1"),
    )
    admitted = InstanceLaunchAdmitted.of(requested)
    assert admitted.model_dump() == requested.model_dump()
    assert admitted.subject() == str(INSTANCE)
    assert admitted.TOPIC == "instance.launch_admitted"
