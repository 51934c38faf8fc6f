"""RFC 5424 formatting of events, without a socket."""

import uuid

from services.notifier.syslog import format_rfc5424
from shared.events import Envelope, InstanceRejected


def test_structured_data_escapes_quotes_backslashes_and_brackets() -> None:
    event = InstanceRejected(instance_id=uuid.uuid4(), owner='ev"il]\\', reason="limit")
    line = format_rfc5424(Envelope.wrap(event, source="boreas/quota"), "host-1").decode()
    assert line.startswith("<133>1 ")  # local0.notice: rejections are worth a look
    assert 'owner="ev\\"il\\]\\\\"' in line
    assert line.endswith(f"instance.rejected {event.instance_id}: limit")


def test_header_fields_are_in_order() -> None:
    event = InstanceRejected(instance_id=uuid.uuid4(), owner="alice", reason="limit")
    envelope = Envelope.wrap(event, source="boreas/quota")
    header = format_rfc5424(envelope, "host-1").decode().split(" ")[:6]
    assert header[1:] == [
        envelope.time.isoformat().replace("+00:00", "Z"),
        "host-1",
        "boreas",
        "-",
        "instance.rejected",
    ]
