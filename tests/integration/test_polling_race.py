"""An instance placed while its account's list call is under way is not taken for gone.

The cloud here is a fake that records the placement (as the poller's handler would) while it
"lists", and answers without the new node, as a list begun a moment earlier does; the database
is real.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from services.poller.polling import Poller
from services.poller.repository import PolledAccount
from shared.config import PollerSettings
from shared.db import service_migrations
from shared.events import SealedSecret
from shared.runtime import ServiceRuntime, utcnow
from tests.integration.support import settings_for

ROOT = Path(__file__).resolve().parents[2]


class ListsBeforeThePlacement:
    """A cloud whose answer predates a node created (and followed) during the call."""

    def __init__(self, runtime: ServiceRuntime, account_id: str) -> None:
        self.runtime, self.account_id = runtime, account_id

    async def call(self, _account: object, _operation: object, *, read_only: bool) -> list:
        assert read_only, "a listing is safe to try again and must say so"
        await self.runtime.pool.execute(
            """INSERT INTO instances (instance_id, owner, account_id, provider,
                                      provider_instance_id, cpus, memory_mb, state)
               VALUES ($1, 'olga', $2, 'simulator', 'sim-new', 1, 512, 'pending')""",
            uuid.uuid4(),
            self.account_id,
        )
        return []


async def test_a_placement_during_the_list_call_is_not_reported_terminated(
    amqp_url: str, database_url: str, unique: str
) -> None:
    settings = settings_for(amqp_url, database_url, PollerSettings)
    schema = f"pr_{unique}"
    runtime = ServiceRuntime(schema, settings, service_migrations(ROOT / "services" / "poller"))
    async with runtime:
        # Its health reported a moment ago: this poll has none to report, and publishes nothing.
        sealed = SealedSecret(key_id="k", nonce="bm9uY2U=", ciphertext="c2VjcmV0")
        account = PolledAccount(
            id=f"acct-{unique}",
            name=f"acct-{unique}",
            provider="simulator",
            config={},
            credentials=sealed,
            revision=1,
            failures=0,
            health_reported_at=utcnow(),
        )
        await runtime.pool.execute(
            """INSERT INTO accounts (id, name, provider, config, credentials, revision)
               VALUES ($1, $1, 'simulator', $2, '{}', 1)""",
            account.id,
            json.dumps({}),
        )
        poller = Poller(
            runtime.pool, ListsBeforeThePlacement(runtime, account.id), settings, utcnow
        )
        await poller.poll_account(account)

        assert await runtime.pool.fetchval("SELECT state FROM instances") == "pending"
        assert await runtime.pool.fetchval("SELECT count(*) FROM outbox") == 0
