"""One launch is one trace: the trace id of the HTTP request reaches every event the launch causes
(envelope attribute and AMQP header) and the log lines of all five services."""

from __future__ import annotations

import secrets
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

import structlog
from aio_pika.abc import AbstractIncomingMessage

from shared import tracing
from shared.testing import EventProbe, wait_until
from tests.integration.api import Api
from tests.integration.clouds import tenant
from tests.integration.stack import poller_runtime, quota_runtime, scheduler_runtime
from tests.integration.webhooks import Receiver, notifier_knows, notifier_runtime, notifier_settings

TRACE_ID = secrets.token_hex(16)
CLIENT_TRACEPARENT = f"00-{TRACE_ID}-{secrets.token_hex(8)}-01"

# A line each service writes for a launch in its trace (with trace_id and span_id).
LINES_OF = {
    "gateway": {"http_request"},
    "quota": {"launch_decided"},
    "scheduler": {"launch_placed"},
    "poller": {"instance_state_seen"},
    "notifier": {"webhook_attempt"},
}


class TracedProbe(EventProbe):
    """An EventProbe that also keeps each message's AMQP ``traceparent`` header, by event id."""

    def __init__(self, amqp_url: str) -> None:
        super().__init__(amqp_url)
        self.headers: dict[str, Any] = {}

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        header = (message.headers or {}).get("traceparent")
        self.headers[message.message_id or ""] = (
            header.decode() if isinstance(header, bytes) else header
        )
        await super()._on_message(message)


@contextmanager
def captured_lines() -> Iterator[list[MutableMapping[str, Any]]]:
    """Every structlog line of every in-process service, as the services' processors leave it
    (context merged, trace ids added)."""
    with structlog.testing.capture_logs(
        processors=[structlog.contextvars.merge_contextvars, tracing.add_trace_ids]
    ) as lines:
        yield lines


def trace_id_of(traceparent: str | None) -> str | None:
    return traceparent.split("-")[1] if traceparent else None


async def test_one_launch_is_one_trace_across_all_five_services(
    api: Api, amqp_url: str, database_url: str, simulator_url: str
) -> None:
    receiver = Receiver()
    probe = TracedProbe(amqp_url)
    await receiver.start()
    try:
        with captured_lines() as lines:
            async with (
                probe,
                quota_runtime(amqp_url, database_url),
                scheduler_runtime(amqp_url, database_url) as scheduler,
                poller_runtime(amqp_url, database_url) as poller,
                notifier_runtime(notifier_settings(amqp_url, database_url)) as notifier,
            ):
                instance_id, headers = await _launch_until_delivered(
                    api, probe, receiver, simulator_url, scheduler, poller, notifier
                )
                _the_events_are_of_the_trace(probe, instance_id)
                await _an_action_is_a_trace_of_its_own(api, probe, instance_id, headers)
        _every_service_logged_in_the_trace(lines, instance_id)
        # Each webhook request carries the trace of the event it delivers.
        delivered = [r for r in receiver.requests if r.event.get("subject") == instance_id]
        assert any(trace_id_of(r.headers.get("traceparent")) == TRACE_ID for r in delivered)
        for request in delivered:
            sent = trace_id_of(request.headers.get("traceparent"))
            assert sent == trace_id_of(request.event.get("traceparent")), request.event
    finally:
        await receiver.stop()


async def _launch_until_delivered(
    api: Api,
    probe: TracedProbe,
    receiver: Receiver,
    simulator_url: str,
    scheduler: Any,
    poller: Any,
    notifier: Any,
) -> tuple[str, dict[str, str]]:
    """Launch in the client's trace; wait until it runs and its webhook is delivered."""
    owner, headers, account = await tenant(api, simulator_url, (scheduler, poller))
    hook = await api.client.post(
        "/v1/webhooks", json={"url": receiver.url(), "topics": ["instance.*"]}, headers=headers
    )
    assert hook.status_code == 201, hook.text
    await wait_until(lambda: notifier_knows(notifier, hook.json()["id"]), timeout=10)

    launched = await api.client.post(
        "/v1/instances",
        json={
            "name": "traced",
            "image": "debian-12",
            "cpus": 1,
            "memory_mb": 512,
            "placement": {"account": account["id"]},
        },
        headers={**headers, "traceparent": CLIENT_TRACEPARENT},
    )
    assert launched.status_code == 202, launched.text
    # The answer names the gateway's span: the client's trace, continued.
    assert trace_id_of(launched.headers["traceparent"]) == TRACE_ID
    assert launched.headers["traceparent"] != CLIENT_TRACEPARENT
    instance_id = launched.json()["id"]

    [running] = await probe.wait_for(
        "instance.state_changed",
        lambda e: e.subject == instance_id and e.data["new_state"] == "running",
        timeout=30,
    )
    await probe.wait_for(
        "webhook.delivery_attempted",
        lambda e: e.data["message_id"] == running.id and e.data["outcome"] == "delivered",
        timeout=20,
    )
    await probe.wait_for(
        "quota.usage_changed",
        lambda e: e.data["owner"] == owner and trace_id_of(e.traceparent) == TRACE_ID,
        timeout=10,
    )
    return instance_id, headers


def _the_events_are_of_the_trace(probe: TracedProbe, instance_id: str) -> None:
    about = [e for e in probe.received if e.subject == instance_id]
    ids = {e.id for e in about}
    deliveries = probe.matching("webhook.delivery_attempted", lambda e: e.data["message_id"] in ids)
    usage = probe.matching("quota.usage_changed", lambda e: trace_id_of(e.traceparent) == TRACE_ID)
    events = [*about, *deliveries, *usage]
    topics = {e.topic for e in events}
    assert {
        "instance.launch_requested",  # gateway
        "instance.launch_admitted",  # quota
        "quota.usage_changed",  # quota
        "instance.placed",  # scheduler (its cloud worker)
        "instance.state_changed",  # poller
        "webhook.delivery_attempted",  # notifier
    } <= topics, topics
    for event in events:
        assert trace_id_of(event.traceparent) == TRACE_ID, (event.topic, event.traceparent)
        assert probe.headers[event.id] == event.traceparent, event.topic
    # Each hop has its own span: no two events share a span id.
    spans = [e.traceparent.split("-")[2] for e in events if e.traceparent]
    assert len(set(spans)) == len(spans)


async def _an_action_is_a_trace_of_its_own(
    api: Api, probe: TracedProbe, instance_id: str, headers: dict[str, str]
) -> None:
    """The poller continues the trace of the last request about the instance: after a stop,
    the state changes it sees are in the stop's trace."""
    stop_trace = secrets.token_hex(16)
    stopped = await api.client.post(
        f"/v1/instances/{instance_id}/stop",
        headers={**headers, "traceparent": f"00-{stop_trace}-{secrets.token_hex(8)}-01"},
    )
    assert stopped.status_code == 202, stopped.text
    [seen] = await probe.wait_for(
        "instance.state_changed",
        lambda e: e.subject == instance_id and e.data["new_state"] == "stopped",
        timeout=30,
    )
    assert trace_id_of(seen.traceparent) == stop_trace


def _every_service_logged_in_the_trace(
    lines: list[MutableMapping[str, Any]], instance_id: str
) -> None:
    traced = [line for line in lines if line.get("trace_id") == TRACE_ID]
    for service, names in LINES_OF.items():
        found = [line for line in traced if line["event"] in names]
        assert found, f"no line of {service} ({', '.join(names)}) in the trace"
        assert all(len(line["span_id"]) == 16 for line in found), found
    by_name = {line["event"]: line for line in traced}
    assert by_name["http_request"]["path"] == "/v1/instances"
    assert by_name["launch_decided"]["instance_id"] == instance_id
    assert by_name["launch_placed"]["instance_id"] == instance_id
    assert by_name["instance_state_seen"]["instance_id"] == instance_id
