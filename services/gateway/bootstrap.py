"""The gateway's runtime, built one way for its app and the tests."""

from __future__ import annotations

from pathlib import Path

from services.gateway import held_launches
from services.gateway.event_hub import EventHub
from services.gateway.handlers import SUBSCRIPTIONS
from services.gateway.repository import feed, identity
from services.gateway.repository import webhooks as webhook_log
from services.gateway.routes import tokens
from shared.config import GatewaySettings
from shared.db import service_migrations
from shared.runtime import Clock, Parts, ServiceRuntime, utcnow


def build(settings: GatewaySettings, hub: EventHub, *, clock: Clock = utcnow) -> ServiceRuntime:
    """``hub``: the process's one listener for event streams, which the routes read too."""

    def wire(rt: ServiceRuntime) -> Parts:
        return Parts(
            loops={
                "feed_pruning": lambda: feed.prune_forever(rt.pool, rt.clock),
                "event_hub": lambda: hub.run(feed.PostgresFeed(rt.pool)),
                "webhook_log_pruning": lambda: webhook_log.prune_attempts_forever(
                    rt.pool, rt.clock
                ),
                "rate_limit_pruning": lambda: identity.prune_rate_limits_forever(
                    rt.pool, rt.clock, tokens.RATE_WINDOW
                ),
                "approval_timeouts": lambda: held_launches.deny_overdue_forever(
                    rt.pool,
                    rt.outbox,
                    rt.clock,
                    timeout=settings.approval_timeout,
                    source=rt.bus.source,
                ),
            }
        )

    return ServiceRuntime(
        "gateway",
        settings,
        service_migrations(Path(__file__).parent),
        SUBSCRIPTIONS,
        wire,
        clock=clock,
        probes=False,  # /metrics, /healthz and /readyz are routes of the app
    )
