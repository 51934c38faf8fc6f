"""Liveness, readiness and the bus-wide service status."""

from __future__ import annotations

from datetime import datetime, timedelta

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from services.gateway.problems import problem
from services.gateway.repository import status as repository
from shared.services import SERVICES

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    database: bool
    bus: bool


class ServiceStatus(BaseModel):
    alive: bool
    last_seen: datetime | None
    replicas: int
    # Background loops (e.g. "polling") down in a replica that still sends heartbeats.
    failing: list[str] = []


class Status(BaseModel):
    services: dict[str, ServiceStatus]


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"description": "database or bus not connected"}},
)
async def readyz(request: Request) -> Readiness | JSONResponse:
    runtime = request.app.state.runtime
    ready = Readiness(database=await runtime.database_ready(), bus=runtime.bus.is_connected)
    if ready.database and ready.bus:
        return ready
    away = " and ".join(
        name for name, up in (("database", ready.database), ("bus", ready.bus)) if not up
    )
    return problem(503, f"not ready: {away} not connected", **ready.model_dump())


@router.get(
    "/v1/status",
    response_model=Status,
    responses={503: {"description": "the gateway's database is not reachable"}},
)
async def status(request: Request) -> Status:
    runtime = request.app.state.runtime
    settings = runtime.settings
    now = runtime.clock()
    alive_since = now - timedelta(
        seconds=settings.heartbeat_interval * settings.alive_after_missed_heartbeats
    )
    seen = await repository.last_seen_by_service(runtime.pool, alive_since=alive_since)
    services = {}
    for name in SERVICES:
        found = seen.get(name)
        if found is None:
            services[name] = ServiceStatus(alive=False, last_seen=None, replicas=0)
            continue
        services[name] = ServiceStatus(
            alive=found.alive_replicas > 0,
            last_seen=found.last_seen,
            replicas=found.alive_replicas,
            failing=found.failing,
        )
    return Status(services=services)
