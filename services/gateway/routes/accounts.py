"""Provider accounts: admins register them and grant them; nobody ever reads the credentials."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import structlog
from fastapi import APIRouter, HTTPException, Response

from services.gateway.account_events import announce_account
from services.gateway.deps import AdminUser, CurrentUser, Db, Gateway, GatewayDep
from services.gateway.problems import ADMINS_ONLY, Responses
from services.gateway.repository import accounts, audit, identity, instances
from services.gateway.schemas import (
    AccountChange,
    Grants,
    NewProviderAccount,
    ProviderAccountDetail,
    ProviderAccountOut,
    ProviderAccountPage,
    ProviderAccountView,
)
from shared.events import SealedSecret

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/v1/provider-accounts", tags=["provider accounts"])


async def _check_grantees(conn: asyncpg.Connection, grantees: list[str]) -> None:
    for grantee in grantees:
        if grantee != "*" and not await identity.user_exists(conn, grantee):
            raise HTTPException(422, f"There is no user named {grantee!r} to grant to.")


NOT_FOUND: Responses = {404: {"description": "no such provider account"}}


def _not_found() -> HTTPException:
    return HTTPException(404, "There is no such provider account.")


async def _lock(conn: asyncpg.Connection, account_id: str) -> None:
    """Hold the account's row until the transaction ends; 404 when there is none."""
    if not await accounts.lock_account(conn, account_id):
        raise _not_found()


REFUSED: Responses = {
    422: {"description": "invalid, or the cloud refused the account (its message says why)"}
}


async def _check_with_cloud(
    gw: Gateway, provider: str, credentials: dict[str, str], config: dict[str, Any]
) -> None:
    """422 with the cloud's own words (credentials redacted) unless it takes the account. Made
    before any transaction opens: a cloud call may take seconds."""
    refusal = await gw.cloud_refusal(provider, credentials, config)
    if refusal is not None:
        log.info("account_refused_by_cloud", provider=provider, error=refusal)
        raise HTTPException(422, f"The {provider} cloud refused the account: {refusal}")


@router.post(
    "", status_code=201, response_model=ProviderAccountOut, responses={403: {}, 409: {}, **REFUSED}
)
async def register_account(
    body: NewProviderAccount, admin: AdminUser, db: Db, gw: GatewayDep
) -> ProviderAccountOut:
    await _check_with_cloud(gw, body.provider, body.credentials, body.config)
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
    found = await accounts.visible_accounts(db, username=user.username, everything=user.is_admin)
    if user.is_admin:
        return ProviderAccountPage(items=found)
    return ProviderAccountPage(items=[account.without_grants() for account in found])


@router.put("/{account_id}/grants", response_model=ProviderAccountOut, responses={403: {}, 404: {}})
async def replace_grants(
    account_id: str, body: Grants, admin: AdminUser, db: Db, gw: GatewayDep
) -> ProviderAccountOut:
    async with gw.outbox.transaction(db) as conn:
        await _lock(conn, account_id)
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


@router.get(
    "/{account_id}", response_model=ProviderAccountDetail | ProviderAccountView, responses=NOT_FOUND
)
async def get_account(
    account_id: str, user: CurrentUser, db: Db
) -> ProviderAccountDetail | ProviderAccountView:
    """Admins see the grants and the account's health; a user, an account granted to them."""
    if user.is_admin:
        found = await accounts.account_with_grants(db, account_id)
        if found is None:
            raise _not_found()
        health = await accounts.health_of(db, account_id)
        return ProviderAccountDetail(**found.model_dump(), health=health)
    for visible in await accounts.visible_accounts(db, username=user.username, everything=False):
        if visible.id == account_id:
            return visible.without_grants()
    raise _not_found()


@router.patch(
    "/{account_id}",
    response_model=ProviderAccountOut,
    responses={**ADMINS_ONLY, **NOT_FOUND, 409: {"description": "the name is taken"}, **REFUSED},
)
async def change_account(
    account_id: str, body: AccountChange, admin: AdminUser, db: Db, gw: GatewayDep
) -> ProviderAccountOut:
    """Rename, reconfigure, re-key or re-grant an account. New credentials or config are
    checked with the cloud first."""
    found = await accounts.account_with_grants(db, account_id)
    if found is None:
        raise _not_found()
    sealed = await _checked_change(gw, db, found, body)
    async with gw.outbox.transaction(db) as conn:
        await _lock(conn, account_id)
        if body.grants is not None:
            await _check_grantees(conn, body.grants)
            await accounts.replace_grants(conn, account_id, body.grants)
        if not await accounts.update_account(
            conn, account_id, name=body.name, config=body.config, sealed=sealed
        ):
            raise HTTPException(409, f"An account named {body.name!r} exists already.")
        changed = sorted(body.model_dump(exclude_none=True))
        await audit.record(
            conn,
            actor=admin.username,
            action="account_changed",
            target=account_id,
            detail={"changed": changed}
            | ({"grants": sorted(set(body.grants))} if body.grants is not None else {}),
        )
        return await announce_account(conn, account_id)


async def _checked_change(
    gw: Gateway, db: asyncpg.Connection, found: ProviderAccountOut, body: AccountChange
) -> SealedSecret | None:
    """Check new credentials or config with the cloud (422 if it refuses); the new credentials
    sealed, if there are any."""
    if body.credentials is None and body.config is None:
        return None
    credentials = body.credentials
    if credentials is None:
        stored = await accounts.sealed_credentials(db, found.id)
        credentials = gw.cipher.open(found.id, stored)
    config = found.config if body.config is None else body.config
    await _check_with_cloud(gw, found.provider, credentials, config)
    return None if body.credentials is None else gw.cipher.seal(found.id, body.credentials)


@router.delete(
    "/{account_id}",
    status_code=204,
    response_class=Response,
    responses={**ADMINS_ONLY, **NOT_FOUND, 409: {"description": "Boreas instances live there"}},
)
async def delete_account(account_id: str, admin: AdminUser, db: Db, gw: GatewayDep) -> Response:
    async with gw.outbox.transaction(db) as conn:
        await _lock(conn, account_id)
        live = await instances.live_on_account(conn, account_id)
        if live:
            raise HTTPException(
                409,
                f"{live} Boreas instance(s) live on this account; terminate them (or wait for "
                "their termination to finish) first.",
            )
        await accounts.bump_revision(conn, account_id)
        announced = await announce_account(conn, account_id, deleted=True)
        await accounts.delete_account(conn, account_id)
        await audit.record(
            conn,
            actor=admin.username,
            action="account_deleted",
            target=account_id,
            detail={"name": announced.name, "provider": announced.provider},
        )
    return Response(status_code=204)
