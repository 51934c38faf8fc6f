"""A deployment's state changes reach its owner as every public event does: on their webhooks,
and in the gateway's event feed under their name, which their ``GET /v1/events`` streams
serve (test_event_stream shows a stream carrying the feed's rows of its owner, and no
other's)."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg

from shared.testing import wait_until
from tests.integration.api import Api
from tests.integration.test_deployments_api import (
    THREE_GROUPS,
    owner_with_accounts,
    publish_state,
)
from tests.integration.webhooks import (
    Receiver,
    notifier_knows,
    notifier_runtime,
    notifier_settings,
    verify,
)


async def test_a_deployment_state_change_reaches_its_owners_webhook_and_feed(
    api: Api, amqp_url: str, database_url: str
) -> None:
    owner, headers = await owner_with_accounts(api)
    receiver = Receiver()
    await receiver.start()
    try:
        async with notifier_runtime(notifier_settings(amqp_url, database_url)) as notifier:
            hook = await api.client.post(
                "/v1/webhooks",
                json={"url": receiver.url(), "topics": ["deployment.*"]},
                headers=headers,
            )
            assert hook.status_code == 201, hook.text
            await wait_until(lambda: notifier_knows(notifier, hook.json()["id"]), timeout=10)
            deployment = (await api.deploy(headers, THREE_GROUPS, parameters={"pg": 16})).json()

            await publish_state(amqp_url, deployment, "requested", "creating", datetime.now(UTC))

            async def in_the_feed() -> list:
                conn = await asyncpg.connect(database_url)
                try:
                    return await conn.fetch(
                        "SELECT owner FROM gateway.event_feed WHERE topic = $1 "
                        "AND envelope->>'subject' = $2",
                        "deployment.state_changed",
                        deployment["id"],
                    )
                finally:
                    await conn.close()

            [row] = await wait_until(in_the_feed, timeout=15, what="the feed row")
            assert row["owner"] == owner

            await wait_until(lambda: receiver.deduped("/hook"), timeout=15, what="the webhook")
            [delivered] = receiver.deduped("/hook")
            assert delivered.event["type"] == "boreas.deployment.state_changed.v1"
            assert delivered.event["data"]["deployment_id"] == deployment["id"]
            assert verify(hook.json()["secret"], delivered.headers, delivered.body)
    finally:
        await receiver.stop()
