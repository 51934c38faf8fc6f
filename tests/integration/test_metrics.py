"""Every service's /metrics is Prometheus text, and its series move as a launch goes through:
scraped before and after a placed launch (with a webhook delivered for it) and a rejected one.

The services share this process, and so one registry: each listener serves the same series, which
the ``service`` label (and each service's own series) tell apart."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from shared.consumer import Subscription, UnitOfWork
from shared.events import Envelope, InstanceRejected, InstanceStateChanged
from shared.ordering import OrderKey
from shared.runtime import ServiceRuntime
from shared.testing import EventProbe, wait_until
from tests.contract.promql import PROMETHEUS_SERIES, declared_names, metric_names
from tests.integration.api import Api
from tests.integration.clouds import launched_and_placed, tenant
from tests.integration.stack import poller_runtime, quota_runtime, scheduler_runtime
from tests.integration.support import first_sighting, rejection, settings_for, throwaway_runtime
from tests.integration.test_consumer import publish_raw
from tests.integration.webhooks import Receiver, notifier_knows, notifier_runtime, notifier_settings

ROOT = Path(__file__).resolve().parents[2]

Key = tuple[str, frozenset[tuple[str, str]]]


def series(name: str, **labels: str) -> Key:
    return name, frozenset(labels.items())


# What one placed launch, its webhook and one rejected launch must move (by at least one).
MOVED = [
    series("boreas_events_published_total", service="gateway", topic="instance.launch_requested"),
    series("boreas_events_consumed_total", service="quota", handler="quota.decide_launch"),
    series("boreas_events_published_total", service="quota", topic="instance.launch_admitted"),
    series("boreas_events_consumed_total", service="scheduler", handler="scheduler.place_launch"),
    series("boreas_events_published_total", service="scheduler", topic="instance.placed"),
    series("boreas_events_published_total", service="poller", topic="instance.state_changed"),
    series("boreas_launches_total", outcome="placed"),
    series("boreas_launch_duration_seconds_count", outcome="placed"),
    series("boreas_placement_duration_seconds_count", outcome="placed"),
    series("boreas_launches_total", outcome="rejected"),
    series("boreas_quota_rejections_total", limit="instances"),
    series("boreas_cloud_calls_total", provider="simulator", outcome="ok"),
    series("boreas_polls_total", provider="simulator", outcome="ok"),
    series("boreas_poll_duration_seconds_count", provider="simulator"),
    series("boreas_webhook_deliveries_total", outcome="delivered"),
]


async def scrape(url: str) -> str:
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return response.text


def values(text: str) -> dict[Key, float]:
    """Every sample, by name and labels."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(samples: Mapping[Key, float], key: Key) -> float:
    """The sum of the samples of ``key``'s name whose labels include ``key``'s."""
    name, labels = key
    return sum(v for (n, ls), v in samples.items() if n == name and labels <= ls)


def probe_url(runtime: ServiceRuntime, path: str) -> str:
    return f"http://127.0.0.1:{runtime.probe_port}{path}"


async def test_metrics_move_as_a_launch_goes_through(
    api: Api, amqp_url: str, database_url: str, simulator_url: str, probe: EventProbe
) -> None:
    receiver = Receiver()
    await receiver.start()
    try:
        async with (
            quota_runtime(amqp_url, database_url) as quota,
            scheduler_runtime(amqp_url, database_url) as scheduler,
            poller_runtime(amqp_url, database_url) as poller,
            notifier_runtime(notifier_settings(amqp_url, database_url)) as notifier,
        ):
            workers = (quota, scheduler, poller, notifier)
            await _launch_and_watch(api, probe, simulator_url, workers, receiver)
    finally:
        await receiver.stop()


async def _launch_and_watch(
    api: Api,
    probe: EventProbe,
    simulator_url: str,
    workers: tuple[ServiceRuntime, ...],
    receiver: Receiver,
) -> None:
    quota, scheduler, poller, notifier = workers
    async with httpx.AsyncClient(timeout=5) as client:
        for worker in workers:
            assert worker.probe_port, worker.service
            health = await client.get(probe_url(worker, "/healthz"))
            assert (health.status_code, health.json()) == (200, {"alive": True})
            ready = await client.get(probe_url(worker, "/readyz"))
            assert (ready.status_code, ready.json()) == (200, {"database": True, "bus": True})

    owner, headers, account = await tenant(api, simulator_url, (scheduler, poller))
    hook = await api.client.post(
        "/v1/webhooks", json={"url": receiver.url(), "topics": ["instance.*"]}, headers=headers
    )
    assert hook.status_code == 201, hook.text
    await wait_until(
        lambda: notifier_knows(notifier, hook.json()["id"]), timeout=10, what="notifier knows"
    )
    limited = await api.client.put(
        f"/v1/quotas/{owner}",
        json={"instances": 1, "cpus": None, "memory_mb": None},
        headers=await api.admin(),
    )
    assert limited.status_code == 200, limited.text
    await probe.wait_for(
        "quota.usage_changed",
        lambda e: e.data["owner"] == owner and e.data["limits"]["instances"] == 1,
        timeout=10,
    )

    before = values(await scrape(probe_url(quota, "/metrics")))
    instance_id, _ = await launched_and_placed(
        api, probe, headers, placement={"account": account["id"]}
    )
    await probe.wait_for(
        "instance.state_changed",
        lambda e: e.subject == instance_id and e.data["new_state"] == "running",
        timeout=20,
    )
    refused = (await api.launch(headers, placement={"account": account["id"]})).json()
    await probe.wait_for("instance.rejected", lambda e: e.subject == refused["id"], timeout=10)

    async def all_moved() -> dict[Key, float] | None:
        now = values(await scrape(probe_url(scheduler, "/metrics")))
        stuck = [key for key in MOVED if total(now, key) < total(before, key) + 1]
        return None if stuck else now

    after = await wait_until(all_moved, timeout=20, what="every series moved")
    outboxes = {dict(labels)["service"] for name, labels in after if name == "boreas_outbox_rows"}
    assert {"gateway", "quota", "scheduler", "poller", "notifier"} <= outboxes

    # Sampled gauges: every queue a worker consumes has its depth, and outboxes drain to 0.
    queues = {dict(labels)["queue"] for name, labels in after if name == "boreas_queue_messages"}
    assert {"quota.decide_launch.0", "scheduler.place_launch.1"} <= queues
    texts = [await scrape(probe_url(worker, "/metrics")) for worker in workers]
    gateway = await api.client.get("/metrics")  # no token: like /healthz
    assert gateway.status_code == 200
    assert gateway.headers["content-type"].startswith("text/plain; version=")
    texts.append(gateway.text)
    assert "/metrics" not in (await api.client.get("/openapi.json")).json()["paths"]
    for text in texts:
        assert {f.name for f in text_string_to_metric_families(text)} >= {
            "boreas_events_published",
            "boreas_outbox_rows",
        }

    # What the dashboard and the alerts read is what a real scrape declares.
    exported = declared_names(texts[0]) | PROMETHEUS_SERIES
    panels = json.loads((ROOT / "deploy/grafana/boreas.json").read_text())["panels"]
    rules = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yaml").read_text())["groups"]
    expressions = [t["expr"] for p in panels for t in p.get("targets", [])]
    expressions += [r["expr"] for g in rules for r in g["rules"]]
    for expr in expressions:
        assert metric_names(expr) <= exported, expr


async def _handled(_event: InstanceRejected, _uow: UnitOfWork) -> None:
    pass


async def _fails(_event: InstanceStateChanged, _uow: UnitOfWork) -> None:
    raise ValueError("this handler has a bug")


async def test_dead_letters_are_counted_by_handler_topic_and_reason(
    amqp_url: str, database_url: str, unique: str
) -> None:
    service = f"dl_{unique}"
    subscriptions = [
        Subscription(InstanceRejected, _handled, name="handled", order_by=OrderKey.OWNER),
        Subscription(InstanceStateChanged, _fails, name="fails", order_by=None),
    ]
    settings = settings_for(amqp_url, database_url, max_deliveries=2)
    async with throwaway_runtime(service, settings, subscriptions) as runtime:
        doomed = first_sighting()
        await runtime.bus.publish_envelope(Envelope.wrap(doomed, source="boreas/test"))
        await publish_raw(amqp_url, "instance.rejected", b"{not json", message_id=unique)
        await runtime.bus.publish(rejection(unique))

        expected = {
            series(
                "boreas_events_dead_lettered_total",
                service=service,
                handler=f"{service}.fails",
                topic="instance.state_changed",
                reason="handler_failed",
            ): 1.0,
            series(
                "boreas_events_dead_lettered_total",
                service=service,
                handler=f"{service}.handled",
                topic="instance.rejected",
                reason="undecodable",
            ): 1.0,
            series(
                "boreas_events_consumed_total",
                service=service,
                handler=f"{service}.handled",
                topic="instance.rejected",
            ): 1.0,
        }

        async def counted() -> bool:
            now = values(await scrape(probe_url(runtime, "/metrics")))
            return all(total(now, key) == value for key, value in expected.items())

        await wait_until(counted, timeout=20, what="the dead letters and the handled event counted")
