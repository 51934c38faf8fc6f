"""POST/GET/DELETE /v1/webhooks and friends: secrets shown once, refused targets, ownership."""

from __future__ import annotations

import uuid

import pytest

from shared.credentials import WEBHOOK
from shared.events import WebhookChanged, decode
from shared.testing import EventProbe
from tests.integration.api import Api, gateway_settings, running_gateway

HOOK = "http://127.0.0.1:9/hook"  # dev settings allow loopback; nothing needs to listen here


async def register(api: Api, headers: dict, **body: object):
    return await api.client.post(
        "/v1/webhooks", json={"url": HOOK, "topics": ["instance.*"], **body}, headers=headers
    )


async def test_the_secret_is_shown_once_and_travels_only_sealed(
    api: Api, probe: EventProbe
) -> None:
    alice, headers = await api.new_user("alice")
    created = await register(api, headers, topics=["instance.*", "quota.#"])
    assert created.status_code == 201, created.text
    hook = created.json()
    secret = hook["secret"]
    assert secret.startswith("whsec_")
    assert created.headers["location"] == f"/v1/webhooks/{hook['id']}"
    assert (hook["owner"], hook["scope"], hook["state"]) == (alice, "own", "active")
    assert hook["topics"] == ["instance.*", "quota.#"]

    listed = await api.client.get("/v1/webhooks", headers=headers)
    shown = await api.client.get(f"/v1/webhooks/{hook['id']}", headers=headers)
    assert [h["id"] for h in listed.json()["items"]] == [hook["id"]]
    assert shown.status_code == 200
    for response in (listed, shown):
        assert secret not in response.text and 'secret"' not in response.text

    stored = await api.app.state.runtime.pool.fetchval(
        "SELECT secrets::text FROM webhooks WHERE id = $1", uuid.UUID(hook["id"])
    )
    assert secret not in stored and secret.removeprefix("whsec_") not in stored

    [announced] = await probe.wait_for(
        "webhook.changed", lambda e: e.data["webhook_id"] == hook["id"], timeout=10
    )
    assert secret.removeprefix("whsec_") not in announced.model_dump_json()
    event = decode(announced)
    assert isinstance(event, WebhookChanged) and event.active and event.revision == 1
    cipher = api.app.state.gateway.cipher
    [sealed] = event.secrets
    opened = cipher.open(hook["id"], sealed.sealed, purpose=WEBHOOK)
    assert opened == {"secret": secret}


async def test_someone_elses_webhook_is_not_found(api: Api) -> None:
    _, alice = await api.new_user("alice")
    _, bob = await api.new_user("bob")
    hook = (await register(api, alice)).json()
    for method, path in [
        ("GET", ""),
        ("DELETE", ""),
        ("POST", "/rotate-secret"),
        ("POST", "/enable"),
        ("GET", "/deliveries"),
    ]:
        response = await api.client.request(method, f"/v1/webhooks/{hook['id']}{path}", headers=bob)
        assert response.status_code == 404, (method, path)
        assert response.headers["content-type"] == "application/problem+json"
    assert (await api.client.get("/v1/webhooks", headers=bob)).json()["items"] == []
    not_an_id = await api.client.get("/v1/webhooks/not-an-id", headers=alice)
    assert not_an_id.status_code == 404
    assert not_an_id.json()["detail"] == "There is no such webhook."

    admin = await api.admin()
    seen = await api.client.get(f"/v1/webhooks/{hook['id']}", headers=admin)
    assert seen.status_code == 200
    deleted = await api.client.delete(f"/v1/webhooks/{hook['id']}", headers=alice)
    assert deleted.status_code == 204
    gone = await api.client.get(f"/v1/webhooks/{hook['id']}", headers=alice)
    assert gone.status_code == 404
    kept = await api.app.state.runtime.pool.fetchval(
        "SELECT jsonb_array_length(secrets) FROM webhooks WHERE id = $1", uuid.UUID(hook["id"])
    )
    assert kept == 0  # a deleted webhook keeps no secret


async def test_scope_all_is_for_admins_and_their_default(api: Api) -> None:
    _, user = await api.new_user("carol")
    refused = await register(api, user, scope="all")
    assert refused.status_code == 403
    admin_hook = await register(api, await api.admin())
    assert admin_hook.json()["scope"] == "all"
    own = await register(api, await api.admin(), scope="own")
    assert own.json()["scope"] == "own"


@pytest.mark.parametrize(
    ("topics", "detail"),
    [
        (["instance.placd"], "No event topic matches instance.placd"),
        (["provider_account.*"], "No event topic matches provider_account.*"),
        (["webhook.#"], "No event topic matches webhook.#"),
    ],
)
async def test_topics_that_match_no_public_topic_are_refused(
    api: Api, topics: list[str], detail: str
) -> None:
    _, headers = await api.new_user("dave")
    refused = await register(api, headers, topics=topics)
    assert refused.status_code == 422
    assert detail in refused.json()["detail"]


@pytest.mark.parametrize("bad", [[], ["Instance.*"], ["instance..placed"], ["a" * 101]])
async def test_malformed_topics_are_refused(api: Api, bad: list[str]) -> None:
    _, headers = await api.new_user("erin")
    assert (await register(api, headers, topics=bad)).status_code == 422


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:8080/hook", "loopback"),
        ("http://localhost:8080/hook", "has no public address"),
        ("http://[::1]:8080/hook", "loopback"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://10.0.0.7/hook", "private"),
        ("http://192.168.1.20/hook", "private"),
        ("http://[::ffff:10.0.0.7]/hook", "private"),
        ("http://100.64.1.1/hook", "shared"),
        # Accepted with 201 before the special-purpose registries were listed in full:
        ("http://[::a9fe:a9fe]/hook", "IPv4-compatible"),
        ("http://[::ffff:0:a9fe:a9fe]/hook", "IPv4-translated"),
        ("http://192.0.0.8/hook", "IETF protocol assignment"),
        ("https://user:password@hooks.example/in", "no credentials"),
        ("gopher://hooks.example/", "https://"),
    ],
)
async def test_targets_near_boreas_are_refused_unless_allowed(
    amqp_url: str, database_url: str, url: str, reason: str
) -> None:
    settings = gateway_settings(amqp_url, database_url, webhook_allowed_nets="")
    async with running_gateway(settings) as strict:
        _, headers = await strict.new_user("mallory")
        refused = await register(strict, headers, url=url)
        assert refused.status_code == 422
        assert refused.headers["content-type"] == "application/problem+json"
        assert reason in refused.json()["detail"]
        listed = await strict.client.get("/v1/webhooks", headers=headers)
        assert listed.json()["items"] == []


async def test_an_allowed_network_is_accepted(amqp_url: str, database_url: str) -> None:
    settings = gateway_settings(amqp_url, database_url, webhook_allowed_nets="10.0.0.0/8")
    async with running_gateway(settings) as gateway:
        _, headers = await gateway.new_user("trent")
        accepted = await register(gateway, headers, url="http://10.0.0.7:8080/hook")
        assert accepted.status_code == 201
        refused = await register(gateway, headers, url="http://127.0.0.1:8080/hook")
        assert refused.status_code == 422


async def test_one_owner_has_at_most_25_webhooks(api: Api) -> None:
    _, headers = await api.new_user("frank")
    created = [await register(api, headers) for _ in range(25)]
    assert {r.status_code for r in created} == {201}
    over = await register(api, headers)
    assert over.status_code == 409
    await api.client.delete(f"/v1/webhooks/{created[0].json()['id']}", headers=headers)
    assert (await register(api, headers)).status_code == 201


async def test_rotation_shows_a_new_secret_and_keeps_the_old_one_a_while(api: Api) -> None:
    _, headers = await api.new_user("grace")
    hook = (await register(api, headers)).json()
    rotated = await api.client.post(
        f"/v1/webhooks/{hook['id']}/rotate-secret",
        json={"previous_secret_valid_seconds": 600},
        headers=headers,
    )
    assert rotated.status_code == 200
    body = rotated.json()
    assert body["secret"].startswith("whsec_") and body["secret"] != hook["secret"]
    assert body["previous_secret_expires_at"] is not None
    stored = await api.app.state.runtime.pool.fetchval(
        "SELECT jsonb_array_length(secrets) FROM webhooks WHERE id = $1", uuid.UUID(hook["id"])
    )
    assert stored == 2
    at_once = await api.client.post(
        f"/v1/webhooks/{hook['id']}/rotate-secret",
        json={"previous_secret_valid_seconds": 0},
        headers=headers,
    )
    assert at_once.json()["previous_secret_expires_at"] is None
    too_long = await api.client.post(
        f"/v1/webhooks/{hook['id']}/rotate-secret",
        json={"previous_secret_valid_seconds": 10**9},
        headers=headers,
    )
    assert too_long.status_code == 422
