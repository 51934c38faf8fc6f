"""Users: admins create them; everyone may ask who they are."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, HTTPException

from services.gateway import security
from services.gateway.deps import AdminUser, CurrentUser, Db, GatewayDep
from services.gateway.repository import audit, identity
from services.gateway.routes.quotas import start_with_default_limits
from services.gateway.schemas import NewUser, UserOut

router = APIRouter(prefix="/v1/users", tags=["users"])


@router.post("", status_code=201, response_model=UserOut, responses={403: {}, 409: {}})
async def create_user(body: NewUser, admin: AdminUser, db: Db, gw: GatewayDep) -> UserOut:
    password_hash = await asyncio.to_thread(security.hash_password, body.password)
    async with gw.outbox.transaction(db) as conn:
        user = await identity.create_user(
            conn, username=body.username, password_hash=password_hash, role=body.role
        )
        if user is None:
            raise HTTPException(409, f"The username {body.username!r} is taken.")
        await audit.record(
            conn,
            actor=admin.username,
            action="user_created",
            target=user.username,
            detail={"role": user.role},
        )
        await start_with_default_limits(conn, user.username, gw)
    return UserOut(id=user.id, username=user.username, role=user.role)


@router.get("/me", response_model=UserOut)
async def who_am_i(user: CurrentUser) -> UserOut:
    return UserOut(id=user.id, username=user.username, role=user.role)
