"""Webhook deliveries end to end: gateway, quota, scheduler, poller and notifier on a real bus and
database, the simulated cloud, and a local receiver that checks every signature itself."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest

from shared.credentials import CredentialCipher, new_key_text
from shared.events import (
    PUBLIC,
    Envelope,
    Event,
    InstanceRejected,
)
from shared.runtime import ServiceRuntime
from shared.testing import EventProbe, wait_until
from tests.infra import Infrastructure
from tests.integration.api import Api, gateway_settings, running_gateway
from tests.integration.publishing import connected_bus
from tests.integration.stack import (
    poller_runtime,
    quota_runtime,
    scheduler_runtime,
    simulator_account,
)
from tests.integration.webhooks import (
    CountingTransport,
    Receiver,
    Request,
    announced_webhook,
    notifier_knows,
    notifier_runtime,
    notifier_settings,
    verify,
)

PUBLIC_TOPICS = {cls.TOPIC for cls in PUBLIC}
PER_REPLICA = 4  # requests one notifier replica has in flight, in the two-replica test


@pytest.fixture(scope="module")
def stack_urls(infra: Infrastructure) -> Iterator[tuple[str, str]]:
    """A vhost and database of this module's own: no webhook of another test hears its events."""
    with infra.isolated() as urls:
        yield urls


@pytest.fixture
async def gateway(stack_urls: tuple[str, str]) -> AsyncIterator[Api]:
    async with running_gateway(gateway_settings(*stack_urls)) as api:
        yield api


async def register(api: Api, headers: dict, url: str, topics: list[str]) -> dict:
    response = await api.client.post(
        "/v1/webhooks", json={"url": url, "topics": topics}, headers=headers
    )
    assert response.status_code == 201, response.text
    return response.json()


async def delivery_log(api: Api, headers: dict, hook: dict, message_id: str = "") -> list[dict]:
    query = f"?message_id={message_id}" if message_id else "?limit=200"
    response = await api.client.get(f"/v1/webhooks/{hook['id']}/deliveries{query}", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["items"]


@dataclass
class DownThenUp:
    """What one scenario left behind: alice's webhook (alice's instance and quota events) and the
    admin's (everything) registered while their receiver was down; alice launches three
    instances and bob two, one of each terminated; then the receiver comes up, answers the very
    first request only once the notifier has sent it again, and refuses every third new message
    once with 503."""

    receiver: Receiver
    alice: str
    bob: str
    hooks: dict[str, dict]  # by the receiver's path: "/alice", "/admin"
    launched: dict[str, list[str]]  # instance ids by owner
    on_bus: list[Envelope]  # every event the probe saw, in the order it saw them
    log_while_down: list[dict]  # alice's delivery log before the receiver came up
    slow_log: list[dict]  # the delivery log of the first request's message, once delivered

    def events_of(self, *owners: str) -> set[str]:
        """The ids of the public events about ``owners``."""
        return {
            e.id for e in self.on_bus if e.topic in PUBLIC_TOPICS and e.data.get("owner") in owners
        }

    @property
    def slow(self) -> Request:
        return self.receiver.requests[0]


def reached(instance_id: str, state: str):
    return lambda e: e.subject == instance_id and e.data["new_state"] == state


@pytest.fixture(scope="module")
async def down_then_up(stack_urls: tuple[str, str], simulator_url: str) -> DownThenUp:
    first_tries: Counter[str] = Counter()
    resent = asyncio.Event()

    async def unreliable(request: Request) -> int:
        """The first request ever is answered only once the notifier, tired of waiting, has
        sent it again (a duplicate); every third new message is refused once with 503."""
        first_tries[request.message_id] += 1
        first = receiver.requests[0]
        if request is first:
            with contextlib.suppress(TimeoutError):  # bounded, should the retry never come
                await asyncio.wait_for(resent.wait(), 20)
            return 200
        if (request.path, request.message_id) == (first.path, first.message_id):
            resent.set()
        if first_tries[request.message_id] == 1 and len(first_tries) % 3 == 0:
            return 503
        return 204

    receiver = Receiver(answer=unreliable)  # not listening yet: the endpoint is down
    amqp_url, database_url = stack_urls
    async with (
        running_gateway(gateway_settings(*stack_urls)) as api,
        EventProbe(amqp_url) as probe,
        quota_runtime(amqp_url, database_url),
        scheduler_runtime(amqp_url, database_url) as scheduler,
        poller_runtime(amqp_url, database_url) as poller,
        notifier_runtime(notifier_settings(amqp_url, database_url)) as notifier,
    ):
        alice, alice_headers = await api.new_user("alice")
        bob, bob_headers = await api.new_user("bob")
        admin_headers = await api.admin()
        await simulator_account(api, simulator_url, ["*"], followers=(scheduler, poller))
        headers = {"/alice": alice_headers, "/admin": admin_headers}
        hooks = {
            "/alice": await register(
                api, alice_headers, receiver.url("/alice"), ["instance.*", "quota.#"]
            ),
            "/admin": await register(api, admin_headers, receiver.url("/admin"), ["#"]),
        }
        for hook in hooks.values():
            await wait_until(lambda h=hook: notifier_knows(notifier, h["id"]), timeout=10)

        launched: dict[str, list[str]] = {alice: [], bob: []}
        for owner, owner_headers, count in ((alice, alice_headers, 3), (bob, bob_headers, 2)):
            for i in range(count):
                response = await api.launch(owner_headers, name=f"{owner[:5]}-{i}")
                assert response.status_code == 202, response.text
                launched[owner].append(response.json()["id"])
        for instance_id in launched[alice] + launched[bob]:
            await probe.wait_for(
                "instance.state_changed", reached(instance_id, "running"), timeout=30
            )
        for owner, owner_headers in ((alice, alice_headers), (bob, bob_headers)):
            ended = await api.client.delete(
                f"/v1/instances/{launched[owner][0]}", headers=owner_headers
            )
            assert ended.status_code == 202
            await probe.wait_for(
                "instance.state_changed", reached(launched[owner][0], "terminated"), timeout=30
            )

        log_while_down = await wait_until(
            lambda: delivery_log(api, alice_headers, hooks["/alice"]), timeout=10, what="attempts"
        )
        assert receiver.requests == [], "the receiver was not listening"
        await receiver.start()

        # At least every event each webhook is owed; the tests check it is no more than that.
        scenario = DownThenUp(
            receiver, alice, bob, hooks, launched, probe.received, log_while_down, []
        )
        owed = {"/alice": (alice,), "/admin": (alice, bob)}
        for path, owners in owed.items():
            await wait_until(
                lambda p=path, o=owners: (
                    scenario.events_of(*o) <= {r.message_id for r in receiver.deduped(p)}
                ),
                timeout=60,
                what=f"{path}'s webhook received its events",
            )
        slow = scenario.slow

        async def slow_story() -> list[dict]:
            log = await delivery_log(api, headers[slow.path], hooks[slow.path], slow.message_id)
            return log if log and log[0]["outcome"] == "delivered" else []

        scenario.slow_log = await wait_until(slow_story, timeout=10, what="the slow message's log")
        await receiver.stop()
    scenario.on_bus = list(probe.received)
    return scenario


async def test_while_the_receiver_is_down_every_attempt_is_logged_to_be_retried(
    down_then_up: DownThenUp,
) -> None:
    log = down_then_up.log_while_down
    assert {a["outcome"] for a in log} == {"retrying"}
    assert all("ConnectError" in a["error"] and a["status_code"] is None for a in log)


async def test_a_users_webhook_gets_every_one_of_their_events(down_then_up: DownThenUp) -> None:
    received = {r.message_id for r in down_then_up.receiver.deduped("/alice")}
    assert received == down_then_up.events_of(down_then_up.alice)


async def test_an_admins_catch_all_webhook_gets_everyones_events(
    down_then_up: DownThenUp,
) -> None:
    received = {r.message_id for r in down_then_up.receiver.deduped("/admin")}
    assert received == down_then_up.events_of(down_then_up.alice, down_then_up.bob)


async def test_a_users_webhook_carries_their_events_only(down_then_up: DownThenUp) -> None:
    at_alice = [r for r in down_then_up.receiver.requests if r.path == "/alice"]
    assert {r.event["data"]["owner"] for r in at_alice} == {down_then_up.alice}
    assert not {r.message_id for r in at_alice} & down_then_up.events_of(down_then_up.bob)


async def test_every_request_is_signed_with_its_own_webhooks_secret(
    down_then_up: DownThenUp,
) -> None:
    receiver, hooks = down_then_up.receiver, down_then_up.hooks
    assert all(verify(hooks[r.path]["secret"], r.headers, r.body) for r in receiver.requests)
    # The check can fail: one webhook's secret does not verify the other's requests.
    admins = receiver.at("/admin")
    assert not any(verify(hooks["/alice"]["secret"], r.headers, r.body) for r in admins)


async def test_a_message_answered_too_slowly_is_sent_again(down_then_up: DownThenUp) -> None:
    # Counted on arrival: the slow answer may still have been pending when the receiver stopped.
    slow = down_then_up.slow
    again = [
        r
        for r in down_then_up.receiver.requests
        if (r.path, r.message_id) == (slow.path, slow.message_id)
    ]
    assert len(again) >= 2


async def test_a_refused_message_is_sent_again_and_accepted(down_then_up: DownThenUp) -> None:
    requests = down_then_up.receiver.requests
    refused = [(i, r) for i, r in enumerate(requests) if r.status == 503]
    assert refused, "the receiver refused some messages"
    for i, request in refused:
        assert any(
            (later.path, later.message_id) == (request.path, request.message_id)
            and 200 <= later.status < 300
            for later in requests[i + 1 :]
        ), request.message_id


async def test_each_event_arrives_once_after_dedupe_with_its_body_unchanged(
    down_then_up: DownThenUp,
) -> None:
    receiver = down_then_up.receiver
    for path in ("/alice", "/admin"):
        deduped = receiver.deduped(path)
        assert len({r.message_id for r in deduped}) == len(deduped)
        first_body = {d.message_id: d.body for d in deduped}
        assert all(r.body == first_body[r.message_id] for r in receiver.at(path)), path


async def test_events_arrive_in_their_bus_order_per_instance_and_per_owner(
    down_then_up: DownThenUp,
) -> None:
    scenario = down_then_up
    for path, owners in (("/alice", (scenario.alice,)), ("/admin", (scenario.alice, scenario.bob))):
        owed = scenario.events_of(*owners)
        on_bus = [e for e in scenario.on_bus if e.id in owed]
        for key in {e.subject or e.data["owner"] for e in on_bus}:
            sent = [e.id for e in on_bus if (e.subject or e.data["owner"]) == key]
            received = [
                r.message_id
                for r in scenario.receiver.deduped(path)
                if (r.event.get("subject") or r.event["data"]["owner"]) == key
            ]
            assert received == sent, (path, key)


async def test_an_instances_states_arrive_as_one_chain_from_pending(
    down_then_up: DownThenUp,
) -> None:
    events = [r.event for r in down_then_up.receiver.deduped("/alice")]
    for instance_id in down_then_up.launched[down_then_up.alice]:
        states = [
            (e["data"]["old_state"], e["data"]["new_state"])
            for e in events
            if e.get("subject") == instance_id and e["type"] == "boreas.instance.state_changed.v1"
        ]
        assert states[0] == ("pending", "running")
        assert all(a[1] == b[0] for a, b in itertools.pairwise(states)), states


async def test_the_delivery_log_tells_a_messages_attempts_newest_first(
    down_then_up: DownThenUp,
) -> None:
    log = down_then_up.slow_log
    outcomes = [(a["attempt"], a["outcome"]) for a in log]
    assert outcomes[0][1] == "delivered"
    assert [n for n, _ in outcomes] == list(range(len(outcomes), 0, -1))
    assert any(a["error"] == "no answer within 2 s" for a in log)


async def publish(amqp_url: str, *events: Event) -> list[str]:
    async with connected_bus(amqp_url) as bus:
        return [(await bus.publish(e)).id for e in events]


def rejected(owner: str, instance_id: uuid.UUID | None = None, note: str = "") -> InstanceRejected:
    return InstanceRejected(
        instance_id=instance_id or uuid.uuid4(), owner=owner, reason=note or "q"
    )


@pytest.fixture
async def notifier(stack_urls: tuple[str, str]) -> AsyncIterator[ServiceRuntime]:
    async with notifier_runtime(notifier_settings(*stack_urls)) as running:
        yield running


async def test_410_gone_disables_the_webhook_until_it_is_enabled(
    stack_urls: tuple[str, str], gateway: Api, notifier: ServiceRuntime
) -> None:
    gone = True

    async def answer(_request: Request) -> int:
        return 410 if gone else 204

    receiver = Receiver(answer=answer)
    await receiver.start()
    owner, headers = await gateway.new_user("hank")
    hook = await register(gateway, headers, receiver.url(), ["instance.*"])
    await wait_until(lambda: notifier_knows(notifier, hook["id"]), timeout=10)

    [first] = await publish(stack_urls[0], rejected(owner))

    async def state() -> str:
        got = await gateway.client.get(f"/v1/webhooks/{hook['id']}", headers=headers)
        return got.json()["state"]

    await wait_until(lambda: _equals(state(), "disabled"), timeout=10, what="disabled")
    shown = (await gateway.client.get(f"/v1/webhooks/{hook['id']}", headers=headers)).json()
    assert shown["disabled_reason"] == "the endpoint answered 410 Gone"
    [attempt] = await delivery_log(gateway, headers, hook)
    assert (attempt["message_id"], attempt["outcome"], attempt["status_code"]) == (
        first,
        "disabled",
        410,
    )

    # Disabled: nothing more is queued, so nothing can be sent later either.
    [while_disabled] = await publish(stack_urls[0], rejected(owner))
    await wait_until(
        lambda: notifier.pool.fetchval("SELECT 1 FROM inbox WHERE event_id = $1", while_disabled),
        timeout=10,
        what="the notifier handled the event",
    )
    assert await owed(notifier, hook) == []
    assert len(receiver.requests) == 1

    gone = False
    enabled = await gateway.client.post(f"/v1/webhooks/{hook['id']}/enable", headers=headers)
    assert enabled.status_code == 200 and enabled.json()["state"] == "active"
    await wait_until(lambda: notifier_knows(notifier, hook["id"], revision=2), timeout=10)
    [again] = await publish(stack_urls[0], rejected(owner))
    await wait_until(lambda: [r.message_id for r in receiver.at("/hook")] == [again], timeout=10)
    await receiver.stop()


async def _equals(value: object, expected: object) -> bool:
    return (await value) == expected  # type: ignore[misc]


async def test_a_rotation_signs_with_both_secrets_until_the_old_one_expires(
    stack_urls: tuple[str, str], gateway: Api, notifier: ServiceRuntime
) -> None:
    receiver = Receiver()
    await receiver.start()
    owner, headers = await gateway.new_user("ivy")
    hook = await register(gateway, headers, receiver.url(), ["instance.rejected"])
    old = hook["secret"]

    async def rotate(keep_seconds: int) -> str:
        rotated = await gateway.client.post(
            f"/v1/webhooks/{hook['id']}/rotate-secret",
            json={"previous_secret_valid_seconds": keep_seconds},
            headers=headers,
        )
        assert rotated.status_code == 200
        return rotated.json()["secret"]

    new = await rotate(3600)
    await wait_until(lambda: notifier_knows(notifier, hook["id"], revision=2), timeout=10)
    [during] = await publish(stack_urls[0], rejected(owner))
    await wait_until(lambda: len(receiver.at("/hook")) == 1, timeout=10)
    request = receiver.at("/hook")[0]
    assert request.message_id == during
    assert len(request.headers["webhook-signature"].split()) == 2
    assert verify(new, request.headers, request.body) and verify(old, request.headers, request.body)

    newest = await rotate(0)
    await wait_until(lambda: notifier_knows(notifier, hook["id"], revision=3), timeout=10)
    await publish(stack_urls[0], rejected(owner))
    await wait_until(lambda: len(receiver.at("/hook")) == 2, timeout=10)
    after = receiver.at("/hook")[1]
    assert len(after.headers["webhook-signature"].split()) == 1
    assert verify(newest, after.headers, after.body)
    assert not verify(new, after.headers, after.body) and not verify(old, after.headers, after.body)
    await receiver.stop()


async def test_a_delivery_past_the_horizon_is_given_up_and_the_next_one_goes(
    stack_urls: tuple[str, str], gateway: Api
) -> None:
    poisoned: set[str] = set()

    async def answer(request: Request) -> int:
        return 500 if request.message_id in poisoned else 204

    receiver = Receiver(answer=answer)
    await receiver.start()
    settings = notifier_settings(*stack_urls, webhook_retry_horizon=1.5)
    async with notifier_runtime(settings) as notifier:
        owner, headers = await gateway.new_user("jack")
        hook = await register(gateway, headers, receiver.url(), ["instance.*"])
        await wait_until(lambda: notifier_knows(notifier, hook["id"]), timeout=10)
        instance_id = uuid.uuid4()
        broken, fine = rejected(owner, instance_id, "one"), rejected(owner, instance_id, "two")
        [broken_id, fine_id] = await publish_poisoned(stack_urls[0], poisoned, broken, fine)
        await wait_until(lambda: receiver.at("/hook"), timeout=15, what="the next event arrives")

        async def fine_logged() -> list[dict]:  # the log follows the notifier's reports
            log = await delivery_log(gateway, headers, hook)
            return log if any(a["message_id"] == fine_id for a in log) else []

        log = await wait_until(fine_logged, timeout=10, what="the delivery log caught up")

    assert [r.message_id for r in receiver.at("/hook")] == [fine_id]
    # Same instance: the second waited until the first was given up.
    tried = [r for r in receiver.requests if r.message_id == broken_id]
    assert len(tried) >= 2 and receiver.requests[-1].message_id == fine_id
    story = [a["outcome"] for a in log if a["message_id"] == broken_id]
    assert story[0] == "gave_up" and set(story[1:]) == {"retrying"}
    await receiver.stop()


async def publish_poisoned(amqp_url: str, poisoned: set[str], *events: Event) -> list[str]:
    """Publish, marking the first event's id as one the receiver refuses, before it can arrive."""
    async with connected_bus(amqp_url) as bus:
        envelopes = [Envelope.wrap(e, source="boreas/test") for e in events]
        poisoned.add(envelopes[0].id)
        for envelope in envelopes:
            await bus.publish_envelope(envelope)
        return [e.id for e in envelopes]


async def test_the_notifier_checks_the_target_again_before_each_delivery(
    stack_urls: tuple[str, str], gateway: Api
) -> None:
    """Registered while loopback was allowed (gateway), delivered by a notifier that allows
    nothing private: refused at delivery, and said so in the log."""
    receiver = Receiver()
    await receiver.start()
    settings = notifier_settings(*stack_urls, webhook_allowed_nets="")
    async with notifier_runtime(settings) as notifier:
        owner, headers = await gateway.new_user("kim")
        hook = await register(gateway, headers, receiver.url(), ["instance.*"])
        await wait_until(lambda: notifier_knows(notifier, hook["id"]), timeout=10)
        await publish(stack_urls[0], rejected(owner))
        log = await wait_until(lambda: delivery_log(gateway, headers, hook), timeout=10)
    assert receiver.requests == []
    assert log[0]["outcome"] == "retrying"
    assert "127.0.0.1 is a loopback address" in log[0]["error"]
    assert "BOREAS_WEBHOOK_ALLOWED_NETS" in log[0]["error"]
    await receiver.stop()


async def test_a_deleted_webhook_gets_nothing_more(
    stack_urls: tuple[str, str], gateway: Api, notifier: ServiceRuntime
) -> None:
    receiver = Receiver()  # down: deliveries wait
    owner, headers = await gateway.new_user("lee")
    hook = await register(gateway, headers, receiver.url(), ["instance.*"])
    await wait_until(lambda: notifier_knows(notifier, hook["id"]), timeout=10)
    await publish(stack_urls[0], rejected(owner), rejected(owner))
    await wait_until(lambda: delivery_log(gateway, headers, hook), timeout=10)
    deleted = await gateway.client.delete(f"/v1/webhooks/{hook['id']}", headers=headers)
    assert deleted.status_code == 204
    await wait_until(lambda: notifier_knows(notifier, hook["id"], revision=2), timeout=10)
    waiting = await notifier.pool.fetchval(
        "SELECT count(*) FROM deliveries WHERE webhook_id = $1 AND state = 'pending'",
        uuid.UUID(hook["id"]),
    )
    assert waiting == 0
    await receiver.start()
    later = await publish(stack_urls[0], rejected(owner))
    await wait_until(
        lambda: notifier.pool.fetchval("SELECT 1 FROM inbox WHERE event_id = $1", later[0]),
        timeout=10,
    )
    assert await owed(notifier, hook) == []
    assert receiver.requests == []
    await receiver.stop()


class OpenRequests:
    """How many requests a receiver's answer holds open now, and the most it held at once."""

    def __init__(self) -> None:
        self.now = self.most = 0

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            yield
        finally:
            self.now -= 1


async def owed(notifier: ServiceRuntime, hook: dict) -> list[str]:
    """Deliveries the notifier still means to make to ``hook``."""
    rows = await notifier.pool.fetch(
        "SELECT message_id FROM deliveries WHERE webhook_id = $1 AND state = 'pending'",
        uuid.UUID(hook["id"]),
    )
    return [r["message_id"] for r in rows]


async def test_two_notifier_replicas_share_a_backlog_sending_nothing_twice(
    stack_urls: tuple[str, str], gateway: Api
) -> None:
    crowded = asyncio.Event()
    open_ = OpenRequests()

    async def crowding(_request: Request) -> int:
        """Hold every answer until more requests are open at once than one replica may send."""
        with open_.held():
            if open_.now > PER_REPLICA:
                crowded.set()
            with contextlib.suppress(TimeoutError):  # bounded, should the crowd never gather
                await asyncio.wait_for(crowded.wait(), 20)
        return 204

    receiver = Receiver(answer=crowding)
    await receiver.start()
    counters = (CountingTransport(), CountingTransport())
    settings = notifier_settings(
        *stack_urls,
        webhook_concurrency=PER_REPLICA,
        webhook_concurrency_per_endpoint=8,
        webhook_concurrency_per_owner=PER_REPLICA - 1,  # one owner: two replicas, 6 at once
    )
    async with (
        notifier_runtime(settings, counters[0]) as first,
        notifier_runtime(settings, counters[1]),
    ):
        owner, headers = await gateway.new_user("max")
        hook = await register(gateway, headers, receiver.url(), ["instance.*"])
        keys = [uuid.uuid4() for _ in range(8)]
        events = [rejected(owner, keys[i % len(keys)], f"n{i}") for i in range(80)]
        await wait_until(lambda: notifier_knows(first, hook["id"]), timeout=10)
        sent = await publish(stack_urls[0], *events)
        await wait_until(lambda: len(receiver.at("/hook")) >= len(sent), timeout=30)
    await receiver.stop()

    received = [r.message_id for r in receiver.at("/hook")]
    assert sorted(received) == sorted(sent)  # each once: no lease was ever shared
    assert all(c.sent > 0 for c in counters), [c.sent for c in counters]
    assert open_.most > PER_REPLICA  # both replicas were sending at the same moment
    for key in keys:
        in_order = [i for i, e in zip(sent, events, strict=True) if e.instance_id == key]
        assert [m for m in received if m in in_order] == in_order


async def test_a_delivery_that_cannot_be_made_is_logged_and_retried_not_stuck(
    stack_urls: tuple[str, str], notifier: ServiceRuntime
) -> None:
    """Rows the gateway would never produce (a URL with a control character, a secret sealed
    under an unknown key) still end in recorded, counted attempts rather than a dead task."""
    amqp_url, _ = stack_urls
    owner = f"nora-{uuid.uuid4().hex[:6]}"
    good_key = notifier.settings.credential_cipher()
    foreign_key = CredentialCipher.from_texts(new_key_text())
    hooks = {
        "bad url": (uuid.uuid4(), "http://127.0.0.1:9/a\x01b", good_key),
        "unreadable secret": (uuid.uuid4(), "http://127.0.0.1:9/hook", foreign_key),
    }
    for webhook_id, url, cipher in hooks.values():
        await publish(amqp_url, announced_webhook(webhook_id, owner, url, cipher))
        await wait_until(lambda w=webhook_id: notifier_knows(notifier, str(w)), timeout=10)
    async with EventProbe(amqp_url, pattern="webhook.delivery_attempted") as reports:
        [sent] = await publish(amqp_url, rejected(owner))
        found = []
        for webhook_id, _, _ in hooks.values():
            found += await reports.wait_for(
                "webhook.delivery_attempted",
                lambda e, w=webhook_id: (
                    e.data["message_id"] == sent and e.data["webhook_id"] == str(w)
                ),
                timeout=15,
            )
    errors = {e.data["webhook_id"]: e.data["error"] for e in found}
    assert "control characters" in errors[str(hooks["bad url"][0])]
    assert "no configured key" in errors[str(hooks["unreadable secret"][0])]
    assert {e.data["outcome"] for e in found} == {"retrying"}


async def test_a_token_in_a_webhook_url_stays_out_of_logs_audit_and_events(
    stack_urls: tuple[str, str],
    gateway: Api,
    notifier: ServiceRuntime,
    capfd: pytest.CaptureFixture[str],
) -> None:
    token = f"tok-{uuid.uuid4().hex}"
    receiver = Receiver()
    await receiver.start()
    owner, headers = await gateway.new_user("quinn")
    async with EventProbe(stack_urls[0]) as bus:
        hook = await register(gateway, headers, receiver.url(f"/hook?token={token}"), ["#"])
        assert hook["url"].endswith(f"?token={token}"), "the owner sees the whole URL"
        await wait_until(lambda: notifier_knows(notifier, hook["id"]), timeout=10)
        [sent] = await publish(stack_urls[0], rejected(owner))
        await wait_until(lambda: receiver.at(f"/hook?token={token}"), timeout=10)
        [report] = await bus.wait_for(
            "webhook.delivery_attempted",
            lambda e: e.data["message_id"] == sent and e.data["webhook_id"] == hook["id"],
            timeout=10,
        )
        [announced] = bus.matching("webhook.changed", lambda e: e.data["webhook_id"] == hook["id"])
    await receiver.stop()

    # The notifier called the whole URL, query token included...
    assert receiver.at(f"/hook?token={token}")
    # ...which no event on the bus, audit entry or log line shows.
    assert announced.data["url"].endswith("/hook?redacted")
    assert not any(token.encode() in body for body in bus.bodies)
    audit = await gateway.app.state.runtime.pool.fetchval(
        "SELECT string_agg(detail::text, ' ') FROM audit_log WHERE target = $1", hook["id"]
    )
    assert audit and "/hook?redacted" in audit and token not in audit
    logged = capfd.readouterr()
    assert token not in logged.out + logged.err
    assert report.data["outcome"] == "delivered", report.data


POOL, PER_OWNER = 4, 2  # a notifier replica's requests in flight, and one owner's share of them


@pytest.fixture
def own_stack_urls(infra: Infrastructure) -> Iterator[tuple[str, str]]:
    """A vhost and database of the test's own: no delivery left by another test takes a slot."""
    with infra.isolated() as urls:
        yield urls


async def test_an_owner_whose_receiver_holds_every_request_leaves_room_for_another_owner(
    own_stack_urls: tuple[str, str],
) -> None:
    """The security review's case: one owner has more webhooks than a replica may have requests
    in flight, all on a receiver that answers only when the test lets it; another owner's
    delivery still goes out while they are all held, and theirs follow once released."""
    amqp_url, _ = own_stack_urls
    release = asyncio.Event()
    open_ = OpenRequests()

    async def hold(_request: Request) -> int:
        with open_.held():
            await release.wait()
        return 204

    held, fast = Receiver(answer=hold), Receiver()
    await held.start()
    await fast.start()
    # Requests are never given up on while the test holds them: the review's receiver answered
    # within the timeout too, just slowly.
    settings = notifier_settings(
        *own_stack_urls,
        webhook_concurrency=POOL,
        webhook_concurrency_per_owner=PER_OWNER,
        webhook_timeout=60.0,
    )
    cipher = settings.credential_cipher()
    ann, bea = f"ann-{uuid.uuid4().hex[:6]}", f"bea-{uuid.uuid4().hex[:6]}"
    ann_hooks = [
        announced_webhook(uuid.uuid4(), ann, held.url(f"/ann/{i}"), cipher) for i in range(POOL + 2)
    ]
    bea_hook = announced_webhook(uuid.uuid4(), bea, fast.url("/bea"), cipher)
    try:
        async with notifier_runtime(settings) as notifier:
            try:
                await publish(amqp_url, *ann_hooks, bea_hook)
                for hook in (*ann_hooks, bea_hook):
                    await wait_until(
                        lambda h=hook: notifier_knows(notifier, str(h.webhook_id)), timeout=10
                    )
                [ann_event] = await publish(amqp_url, rejected(ann))
                await wait_until(
                    lambda: len(held.requests) >= PER_OWNER, timeout=10, what="ann's share is held"
                )
                [bea_event] = await publish(amqp_url, rejected(bea))
                await wait_until(
                    lambda: fast.at("/bea"), timeout=20, what="bea's delivery while ann's are held"
                )
                # Bea's went out while ann's were held, not after they had been given up on...
                ann_ids = [h.webhook_id for h in ann_hooks]
                tried = await notifier.pool.fetchval(
                    "SELECT sum(attempts) FROM deliveries WHERE webhook_id = ANY($1::uuid[])",
                    ann_ids,
                )
                assert tried == 0
                # ...and with room left in the replica, ann still had no more than her share.
                assert len(held.requests) == PER_OWNER
                release.set()
                await wait_until(
                    lambda: all(held.deduped(f"/ann/{i}") for i in range(POOL + 2)),
                    timeout=30,
                    what="every one of ann's deliveries",
                )
            finally:
                release.set()  # before the notifier stops: it waits for requests in flight
    finally:
        release.set()
        await held.stop()
        await fast.stop()

    assert [r.message_id for r in fast.at("/bea")] == [bea_event]
    for i in range(POOL + 2):
        assert [r.message_id for r in held.deduped(f"/ann/{i}")] == [ann_event]
    assert open_.most == PER_OWNER
