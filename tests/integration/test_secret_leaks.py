"""A provider secret goes in once and never comes out: not in any API response, log line, bus
message or database row in clear."""

from __future__ import annotations

import io
import logging
import uuid

import httpx

from services.gateway.repository.accounts import sealed_credentials
from shared.logging import configure_logging
from shared.testing import EventProbe
from tests.integration.api import Api


class Recorder:
    """Every response the test receives, as text: status, headers and body."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    async def __call__(self, response: httpx.Response) -> None:
        await response.aread()
        self.texts.append(f"{response.status_code} {dict(response.headers)} {response.text}")


async def test_a_provider_secret_never_leaks(api: Api, probe: EventProbe) -> None:
    secret = f"leak-canary-{uuid.uuid4().hex}"
    logs = io.StringIO()
    configure_logging("gateway", "DEBUG", json=True)
    capture = logging.StreamHandler(logs)
    capture.setFormatter(logging.getLogger().handlers[0].formatter)
    logging.getLogger().addHandler(capture)
    recorder = Recorder()
    api.client.event_hooks["response"].append(recorder)
    try:
        alice_name, alice = await api.new_user("alice")
        admin = await api.admin()
        account = {
            "name": f"leaky-{uuid.uuid4().hex[:6]}",
            "provider": "simulator",
            "credentials": {"api_key": f"leak-key-{uuid.uuid4().hex[:8]}", "api_secret": secret},
            "config": {"regions": ["north"]},
            "grants": [alice_name],
        }
        created = await api.client.post("/v1/provider-accounts", json=account, headers=admin)
        assert created.status_code == 201
        # Errors that carry the secret in their request: duplicate, invalid, unknown grantee.
        assert (
            await api.client.post("/v1/provider-accounts", json=account, headers=admin)
        ).status_code == 409
        invalid = {**account, "name": secret.upper(), "grants": [secret]}
        assert (
            await api.client.post("/v1/provider-accounts", json=invalid, headers=admin)
        ).status_code == 422
        too_long = {**account, "name": "x", "credentials": {"secret_key": secret * 200}}
        assert (
            await api.client.post("/v1/provider-accounts", json=too_long, headers=admin)
        ).status_code == 422
        as_user = await api.client.post("/v1/provider-accounts", json=account, headers=alice)
        assert as_user.status_code == 403
        grants = await api.client.put(
            f"/v1/provider-accounts/{created.json()['id']}/grants",
            json={"grants": [alice_name, "*"]},
            headers=admin,
        )
        assert grants.status_code == 200
        for headers in (admin, alice):
            listed = await api.client.get("/v1/provider-accounts", headers=headers)
            assert created.json()["id"] in {a["id"] for a in listed.json()["items"]}
        launched = await api.launch(alice, placement={"account": account["name"]})
        assert launched.status_code == 202
        await api.client.delete(f"/v1/instances/{launched.json()['id']}", headers=alice)
        await api.client.get("/v1/audit", params={"limit": 200}, headers=admin)
        await probe.wait_for(
            "provider_account.changed",
            lambda e: e.data["account_id"] == created.json()["id"] and e.data["revision"] == 2,
        )
        await probe.wait_for(
            "instance.action_requested", lambda e: e.subject == launched.json()["id"]
        )
    finally:
        api.client.event_hooks["response"].remove(recorder)
        logging.getLogger().removeHandler(capture)

    assert len(recorder.texts) >= 10
    assert not [t for t in recorder.texts if secret in t or secret.upper() in t]
    log_text = logs.getvalue()
    assert '"event": "account_created"' in log_text, "the logs were captured"
    assert secret not in log_text and secret.upper() not in log_text
    account_events = [b for b in probe.bodies if b"provider_account.changed" in b]
    assert account_events, "the account's state did reach the bus"
    assert not [b for b in probe.bodies if secret.encode() in b]
    assert not [b for b in probe.bodies if b"AKIA-TEST" in b], "no credential field in clear"

    pool = api.app.state.runtime.pool
    tables = await pool.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'gateway'"
    )
    for table in tables:
        dump = await pool.fetchval(
            f"SELECT coalesce(string_agg(t::text, chr(10)), '') FROM \"{table['table_name']}\" t"
        )
        assert secret not in dump and "AKIA-TEST" not in dump, table["table_name"]

    # The sealed credentials still open with the gateway's key: sealed, not lost.
    async with pool.acquire() as conn:
        sealed = await sealed_credentials(conn, created.json()["id"])
    opened = api.app.state.gateway.cipher.open(created.json()["id"], sealed)
    assert opened["api_secret"] == secret
