"""Prometheus metrics: every series Boreas exports, defined once, in the process's registry.

Series are process-global by nature (one registry per process, scraped at ``/metrics``). The
series every runtime exports (events, outbox, queues) carry a ``service`` label, so runtimes
sharing a process (the tests) stay apart; a service's own series (launches, polls, webhook
deliveries) are moved by that service alone. No label ever holds a user, instance or account
id: labels are bounded sets (topics, handlers, queues, providers, outcomes).

docs/operations.md ("Metrics and alerts") says what each series means and where it moves.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from aio_pika.abc import AbstractRobustConnection
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from shared.events import CATALOG

TOPICS = frozenset(cls.TOPIC for cls in CATALOG)

# No `_created` series beside each counter and histogram: rate() and increase() do without them,
# and they would double the series a scrape carries.
disable_created_metrics()

# Launches take seconds (a create on a slow cloud: tens); polls and placements less.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

EVENTS_PUBLISHED = Counter(
    "boreas_events_published_total",
    "Events the broker confirmed, by publishing service and topic.",
    ["service", "topic"],
)
EVENTS_CONSUMED = Counter(
    "boreas_events_consumed_total",
    "Events handled and acknowledged (duplicates skipped by the inbox included), by handler.",
    ["service", "handler", "topic"],
)
EVENTS_DEAD_LETTERED = Counter(
    "boreas_events_dead_lettered_total",
    "Messages sent to a handler's dead-letter queue: undecodable at once, or after "
    "BOREAS_MAX_DELIVERIES failed tries.",
    ["service", "handler", "topic", "reason"],
)
QUEUE_MESSAGES = Gauge(
    "boreas_queue_messages",
    "Messages ready in a queue this replica consumes, not yet delivered to any consumer "
    "(sampled from the broker every three heartbeat intervals).",
    ["service", "queue"],
)
OUTBOX_ROWS = Gauge(
    "boreas_outbox_rows",
    "Events committed to the service's outbox and not yet confirmed by the broker.",
    ["service"],
)
OUTBOX_OLDEST = Gauge(
    "boreas_outbox_oldest_age_seconds",
    "Age of the oldest row in the service's outbox (0 when empty).",
    ["service"],
)

LAUNCHES = Counter(
    "boreas_launches_total",
    "Launches decided: rejected by quota, placed on a cloud, or failed on every candidate.",
    ["outcome"],
)
QUOTA_REJECTIONS = Counter(
    "boreas_quota_rejections_total",
    "Launches quota refused, by the limit that refused them.",
    ["limit"],
)
PLACEMENT_SECONDS = Histogram(
    "boreas_placement_duration_seconds",
    "One take of a launch by the cloud worker: choosing offers and creating the node, until "
    "the outcome is recorded.",
    ["outcome"],
    buckets=LATENCY_BUCKETS,
)
LAUNCH_SECONDS = Histogram(
    "boreas_launch_duration_seconds",
    "From the scheduler recording an admitted launch to its placement or failure, waits for "
    "throttled clouds and retries after a crash included.",
    ["outcome"],
    buckets=LATENCY_BUCKETS,
)
POLLS = Counter(
    "boreas_polls_total",
    "Account polls, by provider and outcome (error: the cloud's list call failed).",
    ["provider", "outcome"],
)
POLL_SECONDS = Histogram(
    "boreas_poll_duration_seconds",
    "One account poll: the cloud's list call and recording what changed.",
    ["provider"],
    buckets=LATENCY_BUCKETS,
)
CLOUD_CALLS = Counter(
    "boreas_cloud_calls_total",
    "Calls to a cloud API by provider and outcome (throttled: the cloud said too many).",
    ["provider", "outcome"],
)
WEBHOOK_DELIVERIES = Counter(
    "boreas_webhook_deliveries_total",
    "Webhook attempts recorded, by outcome (delivered, retrying, gave_up, disabled).",
    ["outcome"],
)


def service_of(source: str) -> str:
    """The service name in an event source (``boreas/<service>``)."""
    return source.rpartition("/")[2]


def exposition(registry: CollectorRegistry = REGISTRY) -> tuple[bytes, str]:
    """The registry in Prometheus text format, and its content type."""
    return generate_latest(registry), CONTENT_TYPE_LATEST


def topic_label(routing_key: str | None) -> str:
    """A message's topic as a label: one of the catalog's, or "unknown" (a label must not take
    whatever a stray publisher wrote)."""
    return routing_key if routing_key in TOPICS else "unknown"


async def sample_queue_depths(
    connection: AbstractRobustConnection, service: str, queues: Iterable[str]
) -> None:
    """Ask the broker how many messages wait in each of ``queues`` (a passive declare each,
    on one channel)."""
    channel = await connection.channel()
    try:
        for queue in queues:
            declared = await channel.declare_queue(queue, passive=True)
            QUEUE_MESSAGES.labels(service, queue).set(
                declared.declaration_result.message_count or 0
            )
    finally:
        with contextlib.suppress(Exception):
            await channel.close()
