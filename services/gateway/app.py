"""The gateway's FastAPI application: ``create_app(settings)`` wires routes to a service runtime."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from uuid import uuid4

from fastapi import FastAPI

from services.gateway import bootstrap
from services.gateway.body_limit import BodyLimit
from services.gateway.deps import Gateway
from services.gateway.event_hub import EventHub
from services.gateway.first_admin import ensure_admin
from services.gateway.openapi import install_problem_openapi
from services.gateway.problems import install_problem_handlers
from services.gateway.routes import (
    accounts,
    approvals,
    audit,
    deployments,
    events,
    health,
    instances,
    leases,
    metrics,
    quotas,
    tokens,
    users,
    webhooks,
)
from shared.config import GatewaySettings
from shared.logging import configure_logging
from shared.runtime import Clock, ServiceRuntime, utcnow
from shared.tracing import TraceMiddleware
from shared.webhooks.targets import Resolver


def create_app(settings: GatewaySettings, *, clock: Clock = utcnow) -> FastAPI:
    # One listener feeds every event stream of this process (each worker process has its own).
    hub = EventHub(
        settings.event_streams_per_user, holder=f"{settings.replica_id}-{uuid4().hex[:8]}"
    )
    runtime = bootstrap.build(settings, hub, clock=clock)
    gateway = Gateway(runtime, settings, settings.credential_cipher(), clock, Resolver())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with runtime:
            await ensure_admin(runtime.pool, settings)
            watcher = asyncio.create_task(_exit_when_fatal(runtime))
            try:
                yield
            finally:
                watcher.cancel()
                gateway.resolver.close()

    app = FastAPI(
        title="Boreas",
        summary="A multi-cloud broker: shared cloud accounts without shared secrets.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    app.state.gateway = gateway
    app.state.event_hub = hub
    install_problem_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(TraceMiddleware)  # outermost: every answer is traced, a 413 too
    install_problem_openapi(app)
    for module in (
        health,
        metrics,
        tokens,
        users,
        accounts,
        instances,
        deployments,
        approvals,
        leases,
        quotas,
        webhooks,
        audit,
        events,
    ):
        app.include_router(module.router)
    return app


async def _exit_when_fatal(runtime: ServiceRuntime) -> None:
    """A background loop gave up: stop serving (as on SIGTERM) so the process exits."""
    await runtime.fatal.wait()
    os.kill(os.getpid(), signal.SIGTERM)


def app_from_environment() -> FastAPI:
    """The app of one uvicorn worker process, configured from the environment."""
    settings = GatewaySettings()
    configure_logging("gateway", settings.log_level)
    return create_app(settings)


__all__ = ["app_from_environment", "create_app"]
