"""Quotas: admins set a user's limits; admins and that user read limits and usage.
Chargeback: running time per owner and account over a period."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, HTTPException, Query
from pydantic import AwareDatetime, BaseModel, Field

from services.gateway import chargeback
from services.gateway.deps import AdminUser, CurrentUser, Db, Gateway, GatewayDep
from services.gateway.pagination import NameFilter
from services.gateway.repository import audit, identity, quotas
from services.gateway.schemas import Quota, QuotaLimits
from shared.events import QuotaLimitsSet, ResourceLimits
from shared.outbox import add_to_outbox

router = APIRouter(tags=["quotas"])
# Who the audit log and quota.limits_set name when Boreas itself set the limits.
SYSTEM_ACTOR = "boreas"


async def start_with_default_limits(conn: asyncpg.Connection, username: str, gw: Gateway) -> None:
    """A new user's limits are the configured defaults, set as an admin would set them."""
    settings = gw.settings
    limits = {
        "instances": settings.default_quota_instances,
        "cpus": settings.default_quota_cpus,
        "memory_mb": settings.default_quota_memory_mb,
    }
    if all(limit is None for limit in limits.values()):
        return  # no default limits: as if none were set, nothing to announce
    limits["cost_per_month"] = None
    await _set_limits(conn, gw, username, limits, actor=SYSTEM_ACTOR)


async def _set_limits(
    conn: asyncpg.Connection, gw: Gateway, username: str, limits: dict[str, Any], *, actor: str
) -> None:
    """Store ``limits``, announce them to quota and audit who set them, in ``conn``'s
    transaction."""
    await quotas.set_limits(conn, username, limits)
    await add_to_outbox(
        conn,
        QuotaLimitsSet(owner=username, limits=ResourceLimits(**limits), set_by=actor),
        source=gw.runtime.bus.source,
    )
    await audit.record(conn, actor=actor, action="quota_set", target=username, detail=limits)


@router.put("/v1/quotas/{username}", response_model=Quota, responses={403: {}, 404: {}})
async def set_quota(
    username: str, body: QuotaLimits, admin: AdminUser, db: Db, gw: GatewayDep
) -> Quota:
    async with gw.outbox.transaction(db) as conn:
        if not await identity.user_exists(conn, username):
            raise HTTPException(404, f"There is no user named {username!r}.")
        await _set_limits(conn, gw, username, body.model_dump(), actor=admin.username)
        return await quotas.view(conn, username)


@router.get("/v1/quotas/{username}", response_model=Quota, responses={404: {}})
async def get_quota(username: str, user: CurrentUser, db: Db, gw: GatewayDep) -> Quota:
    if not user.is_admin and user.username != username:
        raise HTTPException(404, f"There is no quota of {username!r} for you to see.")
    return await quotas.view(db, username)


class AccountUsage(BaseModel):
    account_id: str
    instance_hours: float
    cpu_hours: float
    memory_mb_hours: float
    # Running hours times the hourly price each instance was placed at (unpriced ones count 0).
    cost: float


class OwnerUsage(BaseModel):
    owner: str
    instance_hours: float
    cpu_hours: float
    memory_mb_hours: float
    cost: float
    accounts: list[AccountUsage]


class UsageReport(BaseModel):
    start: datetime = Field(serialization_alias="from")
    end: datetime = Field(serialization_alias="to")
    owners: list[OwnerUsage]


@router.get(
    "/v1/usage",
    response_model=UsageReport,
    response_model_by_alias=True,
    responses={400: {}, 404: {}},
)
async def usage_report(
    user: CurrentUser,
    db: Db,
    gw: GatewayDep,
    start: Annotated[AwareDatetime | None, Query(alias="from")] = None,
    end: Annotated[AwareDatetime | None, Query(alias="to")] = None,
    owner: NameFilter = None,
) -> UsageReport:
    """Running time only: instance-hours, cpu-hours, memory-MB-hours and cost, per owner and
    account."""
    now = gw.clock()
    try:
        start, end = chargeback.period(start, end, now)
    except ValueError as refused:
        raise HTTPException(400, str(refused)) from None
    if not user.is_admin:
        if owner not in (None, user.username):
            raise HTTPException(404, f"There is no usage of {owner!r} for you to see.")
        owner = user.username
    rows = await quotas.usage_report(db, start=start, end=end, now=now, owner=owner)
    owners = [
        OwnerUsage(
            owner=summed.owner,
            **asdict(summed.total),
            accounts=[
                AccountUsage(account_id=account_id, **asdict(hours))
                for account_id, hours in summed.accounts.items()
            ],
        )
        for summed in chargeback.per_owner(rows)
    ]
    return UsageReport(start=start, end=end, owners=owners)
