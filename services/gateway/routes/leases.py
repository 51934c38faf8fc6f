"""Lease policies: admins set a user's; admins and that user read it."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from services.gateway.deps import AdminUser, CurrentUser, Db, GatewayDep
from services.gateway.problems import ADMINS_ONLY, Responses
from services.gateway.repository import audit, identity, leases
from services.gateway.schemas import LeasePolicy

router = APIRouter(prefix="/v1/lease-policies", tags=["leases"])

NOT_FOUND: Responses = {404: {"description": "no such user (or not you)"}}


@router.put("/{username}", response_model=LeasePolicy, responses={**ADMINS_ONLY, **NOT_FOUND})
async def set_lease_policy(
    username: str, body: LeasePolicy, admin: AdminUser, db: Db, gw: GatewayDep
) -> LeasePolicy:
    async with db.transaction():
        if not await identity.user_exists(db, username):
            raise HTTPException(404, f"There is no user named {username!r}.")
        await leases.set_policy(db, username, body)
        await audit.record(
            db,
            actor=admin.username,
            action="lease_policy_set",
            target=username,
            detail=body.model_dump(),
        )
        return await leases.policy_of(db, username)


@router.get("/{username}", response_model=LeasePolicy, responses=NOT_FOUND)
async def get_lease_policy(username: str, user: CurrentUser, db: Db) -> LeasePolicy:
    if not user.is_admin and user.username != username:
        raise HTTPException(404, f"There is no lease policy of {username!r} for you to see.")
    if not await identity.user_exists(db, username):
        raise HTTPException(404, f"There is no user named {username!r}.")
    return await leases.policy_of(db, username)
