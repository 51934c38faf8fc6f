"""Rotating BOREAS_SECRET_KEY: old ciphertexts still open, the re-seal command moves them all."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from services.gateway.repository.accounts import sealed_credentials
from shared.credentials import (
    WEBHOOK,
    CredentialCipher,
    key_id,
    new_key_text,
    parse_key,
)
from shared.events import SealedSecret
from shared.testing import EventProbe
from tests.infra import Infrastructure
from tests.integration.api import gateway_settings, running_gateway

ROOT = Path(__file__).resolve().parents[2]


async def test_rotation_reseals_every_account_and_announces_it(infra: Infrastructure) -> None:
    old, new = new_key_text(), new_key_text()
    with infra.isolated() as (amqp_url, database_url):
        async with running_gateway(gateway_settings(amqp_url, database_url, secret_key=old)) as api:
            account = await api.new_account(["*"], secret="rotate-me")
            _, headers = await api.new_user("hooked")
            created = await api.client.post(
                "/v1/webhooks",
                json={"url": "http://127.0.0.1:9/hook", "topics": ["#"]},
                headers=headers,
            )
            hook = created.json()

        env = {
            **os.environ,
            "BOREAS_DATABASE_URL": database_url,
            "BOREAS_AMQP_URL": amqp_url,
            "BOREAS_SECRET_KEY": new,
            "BOREAS_PREVIOUS_SECRET_KEYS": old,
        }
        command = [sys.executable, "-m", "services.gateway.rekey"]
        first = await asyncio.to_thread(
            subprocess.run, command, cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert first.returncode == 0, first.stderr
        assert first.stdout.splitlines() == [
            "re-sealed 1 account(s); 0 already under the current key",
            "re-sealed 1 webhook(s); 0 already under the current key",
        ]
        again = await asyncio.to_thread(
            subprocess.run, command, cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert again.stdout.splitlines() == [
            "re-sealed 0 account(s); 1 already under the current key",
            "re-sealed 0 webhook(s); 1 already under the current key",
        ]

        # The new key alone now opens it, and the running gateway announces the new ciphertext.
        only_new = gateway_settings(amqp_url, database_url, secret_key=new)
        async with EventProbe(amqp_url) as watching, running_gateway(only_new) as api:
            pool = api.app.state.runtime.pool
            async with pool.acquire() as conn:
                sealed = await sealed_credentials(conn, account["id"])
            assert sealed.key_id == key_id(parse_key(new))
            cipher = CredentialCipher.from_texts(new)
            assert cipher.open(account["id"], sealed)["api_secret"] == "rotate-me"
            [event] = await watching.wait_for(
                "provider_account.changed",
                lambda e: e.data["account_id"] == account["id"] and e.data["revision"] == 2,
            )
            assert event.data["credentials"]["key_id"] == sealed.key_id

            # The webhook's signing secret likewise: re-announced under the new key, same secret.
            [announced] = await watching.wait_for(
                "webhook.changed",
                lambda e: e.data["webhook_id"] == hook["id"] and e.data["revision"] == 2,
            )
            [secret] = announced.data["secrets"]
            assert secret["sealed"]["key_id"] == sealed.key_id
            opened = cipher.open(
                hook["id"], SealedSecret.model_validate(secret["sealed"]), purpose=WEBHOOK
            )
            assert opened == {"secret": hook["secret"]}
