"""How polls of an account go, reported as provider_account.health_reported: a failure with its
cause (secrets redacted), a recovery, and otherwise a success now and then, never one per poll.

The first test polls the simulated cloud with wrong and then right credentials through the whole
poller; the second drives one poller's polls by hand against a fake cloud whose errors carry
secrets, on the real database, outbox and bus.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from services.poller import repository
from services.poller.polling import Poller
from shared.config import PollerSettings
from shared.credentials import CredentialCipher
from shared.db import service_migrations
from shared.events import ProviderAccountChanged
from shared.runtime import ServiceRuntime, utcnow
from shared.services import event_source
from shared.testing import EventProbe
from tests.integration.api import SESSION_KEY, Api
from tests.integration.publishing import connected_bus
from tests.integration.stack import POLL_INTERVAL, poller_runtime, simulator_account
from tests.integration.support import settings_for

ROOT = Path(__file__).resolve().parents[2]
HEALTH = "provider_account.health_reported"


def health_of(account_id: str, failures: int | None = None):
    return lambda e: (
        e.data["account_id"] == account_id
        and (failures is None or e.data["consecutive_failures"] == failures)
    )


def with_secret(account: dict, api_key: str, secret: str, revision: int) -> ProviderAccountChanged:
    """The account as the gateway announces it after its credentials were changed."""
    sealed = CredentialCipher.from_texts(SESSION_KEY).seal(
        account["id"], {"api_key": api_key, "api_secret": secret}
    )
    return ProviderAccountChanged(
        account_id=account["id"],
        name=account["name"],
        provider="simulator",
        config=account["config"],
        grants=account["grants"],
        credentials=sealed,
        revision=revision,
    )


async def test_an_account_with_wrong_credentials_reports_why_and_then_its_recovery(
    api: Api, amqp_url: str, database_url: str, simulator_url: str, probe: EventProbe
) -> None:
    max_name, _ = await api.new_user("max")
    api_key = f"k-{uuid.uuid4().hex[:8]}"
    wrong = f"wrong-{uuid.uuid4().hex}"
    async with connected_bus(amqp_url, event_source("gateway")) as bus:
        async with poller_runtime(amqp_url, database_url) as poller:
            account = await simulator_account(
                api, simulator_url, [max_name], followers=(poller,), api_key=api_key
            )
            # The first poll of an account reports it, so its health is known from the start.
            [first] = await probe.wait_for(HEALTH, health_of(account["id"]), timeout=10)
            assert first.data["consecutive_failures"] == 0 and first.data["last_error"] is None
            assert first.data["last_poll_at"] is not None

            # A wrong secret put in: the cloud refuses every poll.
            revision = account["revision"]
            await bus.publish(with_secret(account, api_key, wrong, revision + 1))
            [failed] = await probe.wait_for(HEALTH, health_of(account["id"], 1), timeout=10)
            assert failed.data["last_error"] == (
                "InvalidCredsError: 'unknown api key or wrong secret'"
            )
            # The time of the failed poll: the gateway keeps the report of the latest poll.
            failed_at = datetime.fromisoformat(failed.data["last_poll_at"])
            assert failed_at > datetime.fromisoformat(first.data["last_poll_at"])
            assert wrong not in json.dumps(failed.data)

            # The right one put back: the next poll succeeds, and says so.
            await bus.publish(with_secret(account, api_key, "s3cret", revision + 2))
            [_, recovered] = await probe.wait_for(HEALTH, health_of(account["id"], 0), count=2)
            assert recovered.data["last_error"] is None
            assert datetime.fromisoformat(recovered.data["last_poll_at"]) > failed_at


class FakeCloud:
    """Answers each list call with what ``next`` holds: an error to raise, or nodes."""

    def __init__(self) -> None:
        self.next: Exception | list = []

    async def call(self, _account: object, _operation: object, *, read_only: bool) -> list:
        if isinstance(self.next, Exception):
            raise self.next
        return self.next


class CloudRefused(Exception):
    pass


async def test_health_reports_failures_with_secrets_redacted_and_successes_sparingly(
    amqp_url: str, database_url: str, unique: str, probe: EventProbe
) -> None:
    settings = settings_for(
        amqp_url, database_url, PollerSettings, secret_key=SESSION_KEY, poll_interval=POLL_INTERVAL
    )
    runtime = ServiceRuntime(
        f"ph_{unique}", settings, service_migrations(ROOT / "services" / "poller")
    )
    account_id = f"acct-{unique}"
    secret, token = f"secret-{uuid.uuid4().hex}", f"token-{uuid.uuid4().hex}"
    sealed = CredentialCipher.from_texts(SESSION_KEY).seal(
        account_id, {"api_key": "key-id", "api_secret": secret}
    )
    cloud = FakeCloud()
    async with runtime:
        await runtime.pool.execute(
            """INSERT INTO accounts (id, name, provider, config, credentials, revision)
               VALUES ($1, $1, 'simulator', '{}', $2, 1)""",
            account_id,
            sealed.model_dump_json(),
        )
        poller = Poller(runtime.pool, cloud, settings, utcnow, runtime.outbox.wake)

        async def poll(outcome: Exception | list) -> None:
            cloud.next = outcome
            await runtime.pool.execute(
                "UPDATE accounts SET next_poll_at = now() - interval '1 second' WHERE id = $1",
                account_id,
            )
            async with runtime.pool.acquire() as conn:
                [due] = await repository.claim_due_accounts(
                    conn, now=utcnow(), default_interval=POLL_INTERVAL, limit=1
                )
            await poller.poll_account(due)

        refused = CloudRefused(
            f"GET https://cloud.example/v1/nodes?token={token} refused:"
            f" secret {secret} is not valid\nwith url: /v1/nodes?signature={token}"
        )
        await poll(refused)
        [failed] = await probe.wait_for(HEALTH, health_of(account_id, 1))
        assert failed.data["last_error"] == (
            "CloudRefused: GET https://cloud.example/v1/nodes?redacted refused:"
            " secret redacted is not valid\nwith url: /v1/nodes?redacted"
        )

        ok_at = utcnow()
        await poll([])  # recovers
        await poll([])  # a success soon after another: nothing to say
        quiet_at = await runtime.pool.fetchval(
            "SELECT last_poll_at FROM accounts WHERE id = $1", account_id
        )
        await poll(refused)
        await probe.wait_for(HEALTH, health_of(account_id, 1), count=2)
        reports: list[dict[str, Any]] = [
            e.data for e in probe.matching(HEALTH, health_of(account_id))
        ]
        assert [r["consecutive_failures"] for r in reports] == [1, 0, 1]
        assert reports[1]["last_error"] is None
        # Each report carries the time of its own poll.
        polled_at = [datetime.fromisoformat(r["last_poll_at"]) for r in reports]
        assert polled_at[0] < ok_at <= polled_at[1] < quiet_at < polled_at[2]
        assert token not in json.dumps(reports) and secret not in json.dumps(reports)
