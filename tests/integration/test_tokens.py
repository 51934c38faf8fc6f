"""Logging in: who gets a token, for how long, and who gets 401, 403 or 429."""

from __future__ import annotations

import uuid

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


async def test_token_requests_are_rate_limited_per_address_and_per_username(
    amqp_url: str, database_url: str
) -> None:
    settings = gateway_settings(amqp_url, database_url, token_requests_per_minute=3)
    address = f"10.99.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"
    async with running_gateway(settings, client_address=address) as api:
        body = {"username": f"nobody-{uuid.uuid4().hex[:6]}", "password": "guess"}
        statuses = [(await api.client.post("/v1/tokens", json=body)).status_code for _ in range(3)]
        assert statuses == [401, 401, 401]
        limited = await api.client.post("/v1/tokens", json=body)
        assert limited.status_code == 429
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        assert "Too many token requests" in limited.json()["detail"]

    # The same username from other addresses is limited too.
    async with running_gateway(settings, client_address=address + "1") as elsewhere:
        assert (await elsewhere.client.post("/v1/tokens", json=body)).status_code == 429


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
