"""Dead letters can be listed without losing them, and replayed once the handler is fixed."""

from __future__ import annotations

from shared.consumer import Subscription, UnitOfWork
from shared.deadletters import list_dead_letters, replay_dead_letters
from shared.events import InstanceRejected
from shared.ordering import OrderKey
from shared.testing import wait_until
from tests.integration.support import rejection, settings_for, throwaway_runtime


class Flaky:
    """Fails until fixed, like a handler with a bug that a release then corrects."""

    def __init__(self) -> None:
        self.fixed = False
        self.handled: list[str] = []

    async def __call__(self, event: InstanceRejected, uow: UnitOfWork) -> None:
        if not self.fixed:
            raise RuntimeError("bug")
        self.handled.append(event.reason)


async def test_list_keeps_and_replay_redelivers(
    amqp_url: str, database_url: str, unique: str
) -> None:
    handler = Flaky()
    settings = settings_for(amqp_url, database_url, max_deliveries=2)
    runtime = throwaway_runtime(
        f"dl_{unique}",
        settings,
        [Subscription(InstanceRejected, handler, name="h", order_by=OrderKey.OWNER)],
    )
    queue = f"dl_{unique}.h"
    async with runtime:
        events = [rejection(f"dl-{unique}-{i}") for i in range(3)]
        for event in events:
            await runtime.bus.publish(event)

        async def all_dead() -> bool:
            return len(await list_dead_letters(amqp_url, queue)) == 3

        await wait_until(all_dead, timeout=20, what="three dead letters")
        listed = await list_dead_letters(amqp_url, queue)
        assert {d.routing_key for d in listed} == {"instance.rejected"}
        assert {d.reason for d in listed} <= {"rejected", "delivery_limit"}
        assert len(await list_dead_letters(amqp_url, queue)) == 3, "listing removes nothing"

        handler.fixed = True
        replayed = await replay_dead_letters(amqp_url, queue)
        assert len(replayed) == 3
        await wait_until(lambda: len(handler.handled) == 3, timeout=10, what="handled after replay")
        assert sorted(handler.handled) == sorted(e.reason for e in events)
        assert await list_dead_letters(amqp_url, queue) == []
