"""Logging in: who gets a token, for how long, and who gets 401, 403 or 429."""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator

from shared.testing import wait_until
from tests.integration.api import (
    ADMIN_PASSWORD,
    Api,
    FakeClock,
    gateway_settings,
    running_gateway,
)


async def test_login_gives_a_prefixed_token_that_expires(api: Api) -> None:
    response = await api.client.post(
        "/v1/tokens", json={"username": "admin", "password": ADMIN_PASSWORD}
    )
    assert response.status_code == 201
    body = response.json()
    assert body["token"].startswith("bor_") and len(body["token"]) == 47
    me = await api.client.get("/v1/users/me", headers={"Authorization": f"Bearer {body['token']}"})
    assert me.json()["username"] == "admin" and me.json()["role"] == "admin"


async def test_wrong_password_and_unknown_user_get_the_same_401(api: Api) -> None:
    name, _ = await api.new_user()
    wrong = await api.client.post("/v1/tokens", json={"username": name, "password": "nope"})
    unknown = await api.client.post(
        "/v1/tokens", json={"username": f"ghost-{uuid.uuid4().hex[:6]}", "password": "nope"}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["detail"] == unknown.json()["detail"] == "Wrong username or password."
    assert wrong.headers["content-type"] == "application/problem+json"


async def test_expired_token_is_refused(amqp_url: str, database_url: str) -> None:
    clock = FakeClock()
    settings = gateway_settings(amqp_url, database_url, token_ttl_seconds=600)
    async with running_gateway(settings, clock=clock) as api:
        headers = await api.admin()
        assert (await api.client.get("/v1/users/me", headers=headers)).status_code == 200
        clock.advance(601)
        expired = await api.client.get("/v1/users/me", headers=headers)
        assert expired.status_code == 401
        assert expired.headers["www-authenticate"] == "Bearer"
        assert expired.json()["detail"] == "The token is unknown, expired or revoked."


async def test_revoked_token_is_refused_and_others_still_work(api: Api) -> None:
    first, second = await api.admin(), await api.admin()
    revoked = await api.client.delete("/v1/tokens/current", headers=first)
    assert revoked.status_code == 204
    assert (await api.client.get("/v1/users/me", headers=first)).status_code == 401
    assert (await api.client.get("/v1/users/me", headers=second)).status_code == 200


async def test_missing_and_malformed_credentials_are_401(api: Api) -> None:
    cases = {
        "missing": {},
        "not bearer": {"Authorization": "Basic YWRtaW46YWRtaW4="},
        "not a token": {"Authorization": "Bearer nonsense"},
        "right shape, unknown": {"Authorization": "Bearer bor_" + "A" * 43},
        "empty": {"Authorization": "Bearer "},
    }
    for case, headers in cases.items():
        response = await api.client.get("/v1/users/me", headers=headers)
        assert response.status_code == 401, case
        assert response.headers["content-type"] == "application/problem+json", case


async def test_a_user_cannot_reach_admin_routes(api: Api) -> None:
    _, user = await api.new_user()
    account = await api.new_account(["*"])
    attempts = [
        ("POST", "/v1/users", {"username": "mallory-x", "password": "p" * 12, "role": "admin"}),
        (
            "POST",
            "/v1/provider-accounts",
            {"name": "mine", "provider": "simulator", "credentials": {"k": "v"}},
        ),
        ("PUT", f"/v1/provider-accounts/{account['id']}/grants", {"grants": ["*"]}),
        ("GET", "/v1/audit", None),
    ]
    for method, path, body in attempts:
        response = await api.client.request(method, path, json=body, headers=user)
        assert response.status_code == 403, (method, path, response.text)
        assert response.json()["detail"] == "Only an admin may do this."


async def test_nobody_can_mint_a_token_for_someone_else(api: Api) -> None:
    """Regression for the Mist CE ≤ 4.7.1 takeover pattern: a token request that names another
    user, or carries its id, must never yield that user's token."""
    alice_name, alice = await api.new_user("alice")
    bob_name, bob = await api.new_user("bob")
    bob_id = (await api.client.get("/v1/users/me", headers=bob)).json()["id"]
    alice_password = f"{alice_name}-password"

    attempts = [
        ({"username": bob_name, "password": alice_password}, alice),
        ({"username": bob_name, "password": alice_password}, {}),
        ({"username": alice_name, "password": alice_password, "user_id": bob_id}, alice),
        ({"username": alice_name, "password": alice_password, "username_as": bob_name}, alice),
        ({"username": bob_name}, alice),
        ({"user_id": bob_id, "password": alice_password}, alice),
    ]
    for body, headers in attempts:
        response = await api.client.post("/v1/tokens", json=body, headers=headers)
        assert response.status_code in (401, 422), (body, response.text)
        assert "token" not in response.json()

    # And a token alice does get is alice's.
    own = await api.login(alice_name, alice_password)
    assert (await api.client.get("/v1/users/me", headers=own)).json()["username"] == alice_name


class Pauses:
    """Stands in for the gateway's pause: records how long a login was slowed down."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.seconds.append(seconds)


@contextlib.asynccontextmanager
async def gateway_at(
    amqp_url: str, database_url: str, address: str, pauses: Pauses, requests: int = 20
) -> AsyncIterator[Api]:
    settings = gateway_settings(
        amqp_url, database_url, token_requests_per_minute=requests, login_failures_per_minute=3
    )
    async with running_gateway(settings, client_address=address) as api:
        api.app.state.gateway = dataclasses.replace(api.app.state.gateway, pause=pauses)
        yield api


def _address() -> str:
    return f"10.99.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"


async def test_an_address_that_keeps_failing_is_refused_for_that_username(
    amqp_url: str, database_url: str
) -> None:
    pauses = Pauses()
    async with gateway_at(amqp_url, database_url, _address(), pauses) as api:
        name, password = f"dora-{uuid.uuid4().hex[:6]}", "dora-password-1"
        await _create(api, name, password)
        wrong = {"username": name, "password": "guess"}
        statuses = [(await api.client.post("/v1/tokens", json=wrong)).status_code for _ in range(3)]
        assert statuses == [401, 401, 401]
        limited = await api.client.post("/v1/tokens", json=wrong)
        assert limited.status_code == 429
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        assert "Too many failed logins" in limited.json()["detail"]
        # Even the right password, from this address, for this username.
        right = {"username": name, "password": password}
        assert (await api.client.post("/v1/tokens", json=right)).status_code == 429


async def test_failures_from_one_address_do_not_lock_the_user_out_elsewhere(
    amqp_url: str, database_url: str
) -> None:
    pauses = Pauses()
    attacker = _address()
    # (Not admin itself: the session's other tests log in as admin and would be slowed down.)
    name, password = f"gail-{uuid.uuid4().hex[:6]}", "gail-password-1"
    async with gateway_at(amqp_url, database_url, attacker, pauses) as api:
        await _create(api, name, password)
        wrong = {"username": name, "password": "guess"}
        for _ in range(10):  # what kept admin out for everyone before
            await api.client.post("/v1/tokens", json=wrong)
    async with gateway_at(amqp_url, database_url, attacker + "1", pauses) as desk:
        right = {"username": name, "password": password}
        assert (await desk.client.post("/v1/tokens", json=right)).status_code == 201


async def test_failures_for_one_username_from_many_addresses_slow_it_down(
    amqp_url: str, database_url: str
) -> None:
    name, password = f"erin-{uuid.uuid4().hex[:6]}", "erin-password-1"
    other, other_password = f"finn-{uuid.uuid4().hex[:6]}", "finn-password-1"
    pauses = Pauses()
    async with gateway_at(amqp_url, database_url, _address(), pauses) as api:
        await _create(api, name, password)
        await _create(api, other, other_password)
    # Two failures from each of four addresses: no pair reaches its limit, the username does.
    for _ in range(4):
        async with gateway_at(amqp_url, database_url, _address(), pauses) as api:
            for _ in range(2):
                wrong = {"username": name, "password": "guess"}
                assert (await api.client.post("/v1/tokens", json=wrong)).status_code == 401
    # Eight failures, the limit three: the first three went through at once, each later one
    # waited, longer each time.
    assert len(pauses.seconds) == 8 - 3
    assert pauses.seconds == sorted(set(pauses.seconds)), "each further failure waits longer"
    slowed = len(pauses.seconds)

    async with gateway_at(amqp_url, database_url, _address(), pauses) as api:
        # Slowed, not blocked: the right password still gets a token.
        right = {"username": name, "password": password}
        assert (await api.client.post("/v1/tokens", json=right)).status_code == 201
        assert len(pauses.seconds) == slowed + 1
        # Another username is not slowed at all.
        fine = {"username": other, "password": other_password}
        assert (await api.client.post("/v1/tokens", json=fine)).status_code == 201
        assert len(pauses.seconds) == slowed + 1


async def test_one_address_flooding_token_requests_is_refused(
    amqp_url: str, database_url: str
) -> None:
    pauses = Pauses()
    async with gateway_at(amqp_url, database_url, _address(), pauses, requests=3) as api:
        for n in range(3):
            body = {"username": f"nobody-{n}-{uuid.uuid4().hex[:6]}", "password": "guess"}
            assert (await api.client.post("/v1/tokens", json=body)).status_code == 401
        body = {"username": f"nobody-{uuid.uuid4().hex[:6]}", "password": "guess"}
        limited = await api.client.post("/v1/tokens", json=body)
        assert limited.status_code == 429
        assert "Too many token requests" in limited.json()["detail"]


async def _create(api: Api, name: str, password: str) -> None:
    created = await api.client.post(
        "/v1/users",
        json={"username": name, "password": password, "role": "user"},
        headers=await api.admin(),
    )
    assert created.status_code == 201, created.text


async def test_passwords_are_argon2id_and_tokens_kept_only_as_digests(api: Api) -> None:
    name, headers = await api.new_user()
    token = headers["Authorization"].removeprefix("Bearer ")
    pool = api.app.state.runtime.pool
    stored = await pool.fetchval("SELECT password_hash FROM users WHERE username = $1", name)
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    dump = await pool.fetchval("SELECT string_agg(t::text, '|') FROM tokens t")
    assert token not in dump and token[4:] not in dump


async def test_user_creation_validates_and_refuses_duplicates(api: Api) -> None:
    admin = await api.admin()
    name = f"carol-{uuid.uuid4().hex[:6]}"
    weak = await api.client.post(
        "/v1/users", json={"username": name, "password": "short"}, headers=admin
    )
    assert weak.status_code == 422
    ok = await api.client.post(
        "/v1/users", json={"username": name, "password": "long-enough-pw"}, headers=admin
    )
    assert ok.status_code == 201 and ok.json()["role"] == "user"
    again = await api.client.post(
        "/v1/users", json={"username": name, "password": "long-enough-pw"}, headers=admin
    )
    assert again.status_code == 409


async def test_bootstrap_admin_is_created_once_and_audited(api: Api) -> None:
    pool = api.app.state.runtime.pool
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM users WHERE role = 'admin' AND username = 'admin'"
        )
        == 1
    )
    log = await api.client.get(
        "/v1/audit", params={"action": "user_created", "actor": "boreas"}, headers=await api.admin()
    )
    assert [e["target"] for e in log.json()["items"]] == ["admin"]


async def test_unauthenticated_openapi_is_public(api: Api) -> None:
    spec = (await api.client.get("/openapi.json")).json()
    assert "/v1/instances" in spec["paths"]
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


async def test_ended_rate_limit_windows_are_deleted(
    api: Api, amqp_url: str, database_url: str
) -> None:
    pool = api.app.state.runtime.pool
    bucket = f"failed-pair:10.1.2.3 ghost-{uuid.uuid4().hex[:6]}"
    await pool.execute(
        """INSERT INTO rate_limits (bucket, window_start, hits)
           VALUES ($1, now() - interval '2 minutes', 4)""",
        bucket,
    )
    # A gateway's pruning runs as it starts, then every few minutes.
    async with running_gateway(gateway_settings(amqp_url, database_url)):

        async def pruned() -> bool:
            return not await pool.fetchval(
                "SELECT count(*) FROM rate_limits WHERE bucket = $1", bucket
            )

        await wait_until(pruned, timeout=10, what="the ended window deleted")
