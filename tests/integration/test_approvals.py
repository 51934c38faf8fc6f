"""Approvals on the real stack (gateway, quota, scheduler, poller, notifier, the simulated cloud):
a rule holds a large launch, a webhook receiver written here approves it through the API and it
runs; a denied launch releases its quota; an unanswered one is denied when its time is up; the
owner may withdraw one. Approval rules hold every launch of a gateway, so this module runs on a
vhost and database of its own."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import pytest

from shared.runtime import ServiceRuntime
from shared.testing import EventProbe, wait_until
from tests.infra import Infrastructure
from tests.integration.api import Api, gateway_settings, running_gateway
from tests.integration.stack import (
    poller_runtime,
    quota_runtime,
    scheduler_runtime,
    simulator_account,
)
from tests.integration.webhooks import (
    Receiver,
    Request,
    notifier_knows,
    notifier_runtime,
    notifier_settings,
    verify,
)


@pytest.fixture(scope="module")
def stack_urls(infra: Infrastructure) -> Iterator[tuple[str, str]]:
    with infra.isolated() as urls:
        yield urls


@dataclass
class Stack:
    api: Api
    probe: EventProbe
    scheduler: ServiceRuntime
    poller: ServiceRuntime
    notifier: ServiceRuntime


@asynccontextmanager
async def running_stack(urls: tuple[str, str], **gateway: object) -> AsyncIterator[Stack]:
    amqp_url, database_url = urls
    async with AsyncExitStack() as stack:
        api = await stack.enter_async_context(
            running_gateway(gateway_settings(amqp_url, database_url, **gateway))
        )
        probe = await stack.enter_async_context(EventProbe(amqp_url))
        await stack.enter_async_context(quota_runtime(amqp_url, database_url))
        scheduler = await stack.enter_async_context(scheduler_runtime(amqp_url, database_url))
        poller = await stack.enter_async_context(poller_runtime(amqp_url, database_url))
        notifier = await stack.enter_async_context(
            notifier_runtime(notifier_settings(amqp_url, database_url))
        )
        yield Stack(api, probe, scheduler, poller, notifier)


async def set_rules(api: Api, rules: list[dict]) -> None:
    response = await api.client.put(
        "/v1/approval-rules", json={"rules": rules}, headers=await api.admin()
    )
    assert response.status_code == 200, response.text


async def quota_usage(api: Api, username: str) -> dict:
    response = await api.client.get(f"/v1/quotas/{username}", headers=await api.admin())
    assert response.status_code == 200
    return response.json()["usage"]


async def shows(api: Api, headers: dict, instance_id: str, state: str) -> dict:
    async def reached() -> dict | None:
        got = (await api.client.get(f"/v1/instances/{instance_id}", headers=headers)).json()
        return got if got["state"] == state else None

    return await wait_until(reached, timeout=30, what=f"instance {instance_id} {state}")


async def test_rules_are_for_admins_and_checked(stack_urls: tuple[str, str]) -> None:
    async with running_gateway(gateway_settings(*stack_urls)) as api:
        _name, headers = await api.new_user()
        admin = await api.admin()
        assert (
            await api.client.put("/v1/approval-rules", json={"rules": []}, headers=headers)
        ).status_code == 403
        assert (await api.client.get("/v1/approval-rules", headers=headers)).status_code == 403
        rules = [
            {"name": "large", "when": {"cpus_over": 8, "memory_mb_over": 16384}},
            {"name": "pricey", "when": {"cost_per_hour_over": 1.5}},
            {"name": "lab", "when": {"accounts": ["lab"], "owners": ["bob"]}},
        ]
        await set_rules(api, rules)
        assert (await api.client.get("/v1/approval-rules", headers=admin)).json() == {
            "rules": [
                {"name": rule["name"], "when": {**NO_CONDITIONS, **rule["when"]}} for rule in rules
            ]
        }
        for bad in (
            [{"name": "x", "when": {"cpus_over": 1}}, {"name": "x", "when": {"cpus_over": 2}}],
            [{"name": "x", "when": {}}],
            [{"name": "x", "when": {"cpus_over": 1, "gpus_over": 1}}],
            [{"name": "x", "when": {"accounts": []}}],
            [{"when": {"cpus_over": 1}}],
        ):
            refused = await api.client.put("/v1/approval-rules", json={"rules": bad}, headers=admin)
            assert refused.status_code == 422, bad
        # Nothing refused replaced anything.
        assert len((await api.client.get("/v1/approval-rules", headers=admin)).json()["rules"]) == 3
        await set_rules(api, [])
        assert (await api.client.get("/v1/approval-rules", headers=admin)).json() == {"rules": []}


NO_CONDITIONS = {
    "cpus_over": None,
    "memory_mb_over": None,
    "cost_per_hour_over": None,
    "accounts": None,
    "owners": None,
}


async def test_approval_end_to_end(stack_urls: tuple[str, str], simulator_url: str) -> None:
    async with running_stack(stack_urls) as stack:
        api, probe = stack.api, stack.probe
        alice, alice_headers = await api.new_user("alice")
        admin = await api.admin()
        await simulator_account(
            api, simulator_url, [alice], followers=(stack.scheduler, stack.poller)
        )
        await set_rules(api, [{"name": "large", "when": {"cpus_over": 2, "owners": [alice]}}])

        # The "ticketing system": approves every request it hears of, through the API.
        secret = ""
        answers: list[int] = []

        async def ticketing(request: Request) -> int:
            assert verify(secret, request.headers, request.body)
            event = request.event
            if event["type"] != "boreas.instance.approval_requested.v1":
                return 204
            decided = await api.client.post(
                f"/v1/instances/{event['subject']}/approve",
                json={"comment": f"ticket for rules {','.join(event['data']['rules'])}"},
                headers=admin,
            )
            answers.append(decided.status_code)
            return 204

        receiver = Receiver(answer=ticketing)
        await receiver.start()
        try:
            hook = await api.client.post(
                "/v1/webhooks",
                json={"url": receiver.url(), "topics": ["instance.approval_requested"]},
                headers=admin,
            )
            assert hook.status_code == 201, hook.text
            secret = hook.json()["secret"]
            await wait_until(lambda: notifier_knows(stack.notifier, hook.json()["id"]), timeout=10)

            small = await api.launch(alice_headers, name="small", cpus=1, memory_mb=512)
            large = await api.launch(alice_headers, name="large", cpus=4, memory_mb=1024)
            assert small.status_code == large.status_code == 202
            large_id, small_id = large.json()["id"], small.json()["id"]
            assert large.json()["approval_deadline"] is not None
            assert small.json()["approval_deadline"] is None

            (requested,) = await probe.wait_for(
                "instance.launch_requested", lambda e: e.subject == large_id, timeout=10
            )
            assert requested.data["approval_rules"] == ["large"]
            running = await shows(api, alice_headers, large_id, "running")
            assert running["price_per_hour"] is not None
            await shows(api, alice_headers, small_id, "running")
        finally:
            await receiver.stop()

        assert answers[0] == 200
        assert set(answers[1:]) <= {409}  # a redelivery finds it answered
        [delivered] = [r for r in receiver.at("/hook") if r.event["subject"] == large_id]
        assert delivered.event["data"]["rules"] == ["large"]
        # Nothing reached the scheduler before the answer; the small launch was never held.
        order = [
            e.topic
            for e in probe.received
            if e.subject == large_id
            and e.topic
            in (
                "instance.approval_requested",
                "instance.approved",
                "instance.launch_admitted",
                "instance.placed",
            )
        ]
        assert order == [
            "instance.approval_requested",
            "instance.approved",
            "instance.launch_admitted",
            "instance.placed",
        ]
        assert not probe.matching("instance.approval_requested", lambda e: e.subject == small_id)
        (approved,) = probe.matching("instance.approved", lambda e: e.subject == large_id)
        assert approved.data["decided_by"] == "admin"
        assert approved.data["comment"] == "ticket for rules large"
        audit = await api.client.get(
            "/v1/audit", params={"action": "instance_approved"}, headers=admin
        )
        [entry] = [e for e in audit.json()["items"] if e["target"] == large_id]
        assert (entry["actor"], entry["detail"]) == ("admin", {"comment": "ticket for rules large"})

        # Answered already: a second answer is 409.
        again = await api.client.post(f"/v1/instances/{large_id}/deny", headers=admin)
        assert again.status_code == 409


async def test_a_denied_launch_releases_its_quota(
    stack_urls: tuple[str, str], simulator_url: str
) -> None:
    async with running_stack(stack_urls) as stack:
        api, probe = stack.api, stack.probe
        bob, bob_headers = await api.new_user("bob")
        admin = await api.admin()
        await simulator_account(
            api, simulator_url, [bob], followers=(stack.scheduler, stack.poller)
        )
        await set_rules(api, [{"name": "bobs", "when": {"owners": [bob]}}])

        held = (await api.launch(bob_headers, name="held", cpus=3, memory_mb=1024)).json()
        await shows(api, bob_headers, held["id"], "awaiting_approval")
        await wait_until(
            lambda: _usage_is(api, bob, instances=1, cpus=3), timeout=10, what="reserved"
        )
        path = f"/v1/instances/{held['id']}"
        assert (await api.client.post(f"{path}/approve", headers=bob_headers)).status_code == 403
        assert (await api.client.post(f"{path}/start", headers=bob_headers)).status_code == 409

        denied = await api.client.post(f"{path}/deny", json={"comment": "too big"}, headers=admin)
        assert denied.status_code == 200, denied.text
        assert (denied.json()["state"], denied.json()["reason"]) == (
            "denied",
            "denied by admin: too big",
        )
        (event,) = await probe.wait_for("instance.denied", lambda e: e.subject == held["id"])
        assert event.data["decided_by"] == "admin"
        assert event.data["comment"] == "too big"
        await wait_until(
            lambda: _usage_is(api, bob, instances=0, cpus=0), timeout=10, what="released"
        )
        assert (await api.client.post(f"{path}/approve", headers=admin)).status_code == 409
        assert (await api.client.delete(path, headers=bob_headers)).json()["state"] == "denied"

        # Withdrawn by its owner: denied by them, released too.
        second = (await api.launch(bob_headers, name="second", cpus=2, memory_mb=1024)).json()
        await shows(api, bob_headers, second["id"], "awaiting_approval")
        withdrawn = await api.client.delete(f"/v1/instances/{second['id']}", headers=bob_headers)
        assert withdrawn.status_code == 202
        assert (withdrawn.json()["state"], withdrawn.json()["reason"]) == (
            "denied",
            f"withdrawn by {bob}",
        )
        (event,) = await probe.wait_for("instance.denied", lambda e: e.subject == second["id"])
        assert event.data["decided_by"] == bob
        await wait_until(
            lambda: _usage_is(api, bob, instances=0, cpus=0), timeout=10, what="released"
        )
        assert not probe.matching(
            "instance.launch_admitted", lambda e: e.subject in (held["id"], second["id"])
        )


async def _usage_is(api: Api, username: str, **expected: int) -> bool:
    usage = await quota_usage(api, username)
    return all(usage[k] == v for k, v in expected.items())


async def test_an_unanswered_launch_is_denied_when_its_time_is_up(
    stack_urls: tuple[str, str], simulator_url: str
) -> None:
    async with running_stack(stack_urls, approval_timeout=1.5) as stack:
        api, probe = stack.api, stack.probe
        carol, carol_headers = await api.new_user("carol")
        await simulator_account(
            api, simulator_url, [carol], followers=(stack.scheduler, stack.poller)
        )
        await set_rules(api, [{"name": "carols", "when": {"owners": [carol]}}])
        held = (await api.launch(carol_headers, name="waits", cpus=2, memory_mb=1024)).json()
        # Held (quota reserved room and asked), then denied by the timeout.
        await probe.wait_for("instance.approval_requested", lambda e: e.subject == held["id"])
        denied = await shows(api, carol_headers, held["id"], "denied")
        assert denied["reason"] == "no answer within 1.5 s"
        (event,) = await probe.wait_for("instance.denied", lambda e: e.subject == held["id"])
        assert event.data["decided_by"] == "boreas"
        await wait_until(
            lambda: _usage_is(api, carol, instances=0, cpus=0), timeout=10, what="released"
        )
        audit = await api.client.get(
            "/v1/audit", params={"action": "instance_denied"}, headers=await api.admin()
        )
        [entry] = [e for e in audit.json()["items"] if e["target"] == held["id"]]
        assert entry["actor"] == "boreas"
        assert json.dumps(entry["detail"]).count("no answer within 1.5 s") == 1


async def test_a_launch_ended_while_quota_decided_it_is_released_once_held(
    stack_urls: tuple[str, str],
) -> None:
    """DELETE of a launch still ``requested`` terminates it; if quota then holds it for approval,
    the gateway denies it at once (withdrawn by its owner) so that its reservation goes."""
    amqp_url, database_url = stack_urls
    async with (
        running_gateway(gateway_settings(amqp_url, database_url)) as api,
        EventProbe(amqp_url) as probe,
    ):
        dora, headers = await api.new_user("dora")
        await api.new_account([dora])
        await set_rules(api, [{"name": "doras", "when": {"owners": [dora]}}])
        launched = (await api.launch(headers, name="gone", cpus=2, memory_mb=1024)).json()
        ended = await api.client.delete(f"/v1/instances/{launched['id']}", headers=headers)
        assert ended.json()["state"] == "terminating"
        async with quota_runtime(amqp_url, database_url):  # quota decides it only now
            await probe.wait_for(
                "quota.usage_changed",
                lambda e: e.data["owner"] == dora and e.data["usage"]["instances"] == 1,
                timeout=10,
            )
            (denied,) = await probe.wait_for(
                "instance.denied", lambda e: e.subject == launched["id"], timeout=10
            )
            assert (denied.data["decided_by"], denied.data["reason"]) == (
                dora,
                f"withdrawn by {dora}",
            )
            await probe.wait_for(
                "quota.usage_changed",
                lambda e: e.data["owner"] == dora and e.data["usage"]["instances"] == 0,
                timeout=10,
            )
        shown = (await api.client.get(f"/v1/instances/{launched['id']}", headers=headers)).json()
        assert shown["state"] == "terminating"  # the scheduler (not running here) ends it


async def test_two_gateways_deny_each_unanswered_launch_once(
    stack_urls: tuple[str, str],
) -> None:
    amqp_url, database_url = stack_urls
    settings = gateway_settings(amqp_url, database_url, approval_timeout=1.0)
    async with (
        running_gateway(settings) as api,
        running_gateway(settings),  # a second replica, its timeout loop competing
        EventProbe(amqp_url) as probe,
        quota_runtime(amqp_url, database_url),
    ):
        erin, headers = await api.new_user("erin")
        await api.new_account([erin])
        await set_rules(api, [{"name": "erins", "when": {"owners": [erin]}}])
        ids = {
            (await api.launch(headers, name=f"w{i}", cpus=1, memory_mb=512)).json()["id"]
            for i in range(12)
        }
        await probe.wait_for(
            "instance.denied", lambda e: e.subject in ids, count=len(ids), timeout=20
        )
        await probe.wait_for(
            "quota.usage_changed",
            lambda e: e.data["owner"] == erin and e.data["usage"]["instances"] == 0,
            timeout=10,
        )
        denials = probe.matching("instance.denied", lambda e: e.subject in ids)
        assert sorted(e.subject for e in denials) == sorted(ids)  # each once
        assert {e.data["decided_by"] for e in denials} == {"boreas"}
        audit = await api.client.get(
            "/v1/audit",
            params={"action": "instance_denied", "actor": "boreas", "limit": 100},
            headers=await api.admin(),
        )
        audited = [e["target"] for e in audit.json()["items"] if e["target"] in ids]
        assert sorted(audited) == sorted(ids)
