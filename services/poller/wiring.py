"""The poller's parts, built once per process: what ``__main__`` and the tests both run."""

from __future__ import annotations

from collections.abc import Callable

from services.poller.handlers import subscriptions
from services.poller.polling import Poller
from shared.config import PollerSettings
from shared.consumer import Subscription
from shared.runtime import Loops, ServiceRuntime


def poller_parts(
    settings: PollerSettings,
) -> tuple[Callable[[ServiceRuntime], list[Subscription]], Callable[[ServiceRuntime], Loops]]:
    clouds = settings.cloud_connections()

    def handlers(rt: ServiceRuntime) -> list[Subscription]:
        return subscriptions(clouds=clouds, settings=settings, clock=rt.clock)

    def loops(rt: ServiceRuntime) -> Loops:
        return {"polling": Poller(rt.pool, clouds, settings, rt.clock, rt.outbox.wake).run}

    return handlers, loops
