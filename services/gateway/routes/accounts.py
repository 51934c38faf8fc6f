"""Provider accounts: admins register them and grant them; nobody ever reads the credentials."""

from __future__ import annotations

import uuid

import asyncpg
import structlog
from fastapi import APIRouter, HTTPException

from services.gateway.account_events import announce_account
from services.gateway.deps import AdminUser, CurrentUser, Db, GatewayDep
from services.gateway.repository import accounts, audit, identity
from services.gateway.schemas import (
    Grants,
    NewProviderAccount,
    ProviderAccountOut,
    ProviderAccountPage,
    ProviderAccountView,
)

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/v1/provider-accounts", tags=["provider accounts"])


async def _check_grantees(conn: asyncpg.Connection, grantees: list[str]) -> None:
    for grantee in grantees:
        if grantee != "*" and not await identity.user_exists(conn, grantee):
            raise HTTPException(422, f"There is no user named {grantee!r} to grant to.")


@router.post("", status_code=201, response_model=ProviderAccountOut, responses={403: {}, 409: {}})
async def register_account(
    body: NewProviderAccount, admin: AdminUser, db: Db, gw: GatewayDep
) -> ProviderAccountOut:
    account_id = str(uuid.uuid4())
    sealed = gw.cipher.seal(account_id, body.credentials)
    async with gw.outbox.transaction(db) as conn:
        await _check_grantees(conn, body.grants)
        created = await accounts.create_account(
            conn,
            account_id=account_id,
            name=body.name,
            provider=body.provider,
            config=body.config,
            sealed=sealed,
        )
        if not created:
            raise HTTPException(409, f"An account named {body.name!r} exists already.")
        await accounts.replace_grants(conn, account_id, body.grants)
        await audit.record(
            conn,
            actor=admin.username,
            action="account_created",
            target=account_id,
            detail={"name": body.name, "provider": body.provider, "grants": sorted(body.grants)},
        )
        announced = await announce_account(conn, account_id)
    log.info(
        "account_created",
        account_id=account_id,
        name=body.name,
        provider=body.provider,
        grants=sorted(body.grants),
        credential_fields=sorted(body.credentials),
    )
    return announced


@router.get("", response_model=ProviderAccountPage)
async def list_accounts(user: CurrentUser, db: Db, gw: GatewayDep) -> ProviderAccountPage:
    rows = await accounts.visible_accounts(db, username=user.username, everything=user.is_admin)
    shown = ProviderAccountOut if user.is_admin else ProviderAccountView
    return ProviderAccountPage(items=[shown(**r) for r in rows])


@router.put("/{account_id}/grants", response_model=ProviderAccountOut, responses={403: {}, 404: {}})
async def replace_grants(
    account_id: str, body: Grants, admin: AdminUser, db: Db, gw: GatewayDep
) -> ProviderAccountOut:
    async with gw.outbox.transaction(db) as conn:
        if not await accounts.lock_account(conn, account_id):
            raise HTTPException(404, "There is no such provider account.")
        await _check_grantees(conn, body.grants)
        await accounts.replace_grants(conn, account_id, body.grants)
        await accounts.bump_revision(conn, account_id)
        await audit.record(
            conn,
            actor=admin.username,
            action="grants_changed",
            target=account_id,
            detail={"grants": sorted(set(body.grants))},
        )
        return await announce_account(conn, account_id)
