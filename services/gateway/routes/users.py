"""Users: admins create, list, disable, reset and delete them; everyone may ask who they are."""

from __future__ import annotations

import asyncio
import uuid
from functools import partial
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, HTTPException, Query, Response

from services.gateway import security
from services.gateway.account_events import announce_account
from services.gateway.deps import AdminUser, CurrentUser, Db, Gateway, GatewayDep
from services.gateway.pagination import CursorParam, Keyset, PageSize, fetch_page
from services.gateway.problems import ADMINS_ONLY, Responses
from services.gateway.repository import (
    accounts,
    audit,
    deployments,
    identity,
    instances,
    webhooks,
)
from services.gateway.routes.instances import request_action
from services.gateway.routes.quotas import start_with_default_limits
from services.gateway.schemas import (
    InstanceOut,
    NewUser,
    UserAccount,
    UserChange,
    Username,
    UserOut,
    UserPage,
)
from services.gateway.webhook_events import announce_webhook
from shared.events import DeploymentOwnerChanged, InstanceAction, InstanceOwnerChanged
from shared.outbox import add_to_outbox

router = APIRouter(prefix="/v1/users", tags=["users"])

NOT_FOUND: Responses = {404: {"description": "no such user"}}
BY_NAME: Keyset[UserAccount] = Keyset(lambda user: (user.username,), (str,))


@router.post("", status_code=201, response_model=UserOut, responses={403: {}, 409: {}})
async def create_user(body: NewUser, admin: AdminUser, db: Db, gw: GatewayDep) -> UserOut:
    password_hash = await asyncio.to_thread(security.hash_password, body.password)
    async with gw.outbox.transaction(db) as conn:
        user = await identity.create_user(
            conn, username=body.username, password_hash=password_hash, role=body.role
        )
        if user is None:
            raise HTTPException(
                409, f"The username {body.username!r} is taken (or was, by a deleted user)."
            )
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


@router.get(
    "", response_model=UserPage, responses={**ADMINS_ONLY, 400: {"description": "bad cursor"}}
)
async def list_users(
    admin: AdminUser,
    db: Db,
    limit: PageSize = 50,
    cursor: CursorParam = None,
) -> UserPage:
    items, next_cursor = await fetch_page(
        partial(identity.users_page, db), BY_NAME, limit=limit, cursor=cursor
    )
    return UserPage(items=items, next_cursor=next_cursor)


async def _target(conn: asyncpg.Connection, username: str) -> UserAccount:
    found = await identity.account_of(conn, username, for_update=True)
    if found is None:
        raise HTTPException(404, f"There is no user named {username!r}.")
    return found


@router.patch(
    "/{username}",
    response_model=UserAccount,
    responses={
        **ADMINS_ONLY,
        **NOT_FOUND,
        409: {"description": "it would leave no admin who can log in"},
    },
)
async def change_user(
    username: str, body: UserChange, admin: AdminUser, db: Db, gw: GatewayDep
) -> UserAccount:
    """Disable or enable a user, change their role, or reset their password. Disabling and a new
    password revoke every token the user holds, at once."""
    password_hash = (
        await asyncio.to_thread(security.hash_password, body.password) if body.password else None
    )
    async with gw.outbox.transaction(db) as conn:
        target = await _target(conn, username)
        loses_admin = target.role == "admin" and (body.disabled or body.role == "user")
        if loses_admin and await identity.other_active_admins(conn, username) == 0:
            raise HTTPException(
                409, f"{username!r} is the last admin who can log in; make another admin first."
            )
        now = gw.clock()
        updated = await identity.update_user(
            conn,
            target.id,
            now=now,
            disabled=body.disabled,
            role=body.role,
            password_hash=password_hash,
        )
        revoked = 0
        if body.disabled or password_hash is not None:
            revoked = await identity.revoke_all_tokens(conn, target.id, now)
        changed: dict[str, Any] = body.model_dump(exclude_none=True, exclude={"password"})
        if password_hash is not None:
            changed["password"] = "reset"
        await audit.record(
            conn,
            actor=admin.username,
            action="user_changed",
            target=username,
            detail={**changed, "tokens_revoked": revoked},
        )
    return updated


@router.delete("/{username}/tokens", status_code=204, response_class=Response, responses=NOT_FOUND)
async def revoke_tokens(username: str, user: CurrentUser, db: Db, gw: GatewayDep) -> Response:
    """Log a user out everywhere: admins for anyone, users for themselves."""
    if not user.is_admin and user.username != username:
        raise HTTPException(404, f"There is no user named {username!r}.")
    async with db.transaction():
        target = await _target(db, username)
        revoked = await identity.revoke_all_tokens(db, target.id, gw.clock())
        await audit.record(
            db,
            actor=user.username,
            action="tokens_revoked",
            target=username,
            detail={"count": revoked},
        )
    return Response(status_code=204)


@router.delete(
    "/{username}",
    status_code=204,
    response_class=Response,
    responses={
        **ADMINS_ONLY,
        **NOT_FOUND,
        409: {"description": "the user owns live instances, or is yourself"},
        422: {"description": "no such user to transfer to"},
    },
)
async def delete_user(
    username: str,
    admin: AdminUser,
    db: Db,
    gw: GatewayDep,
    settle: Annotated[
        Literal["terminate"] | None,
        Query(alias="instances", description="terminate the user's live instances"),
    ] = None,
    transfer_to: Annotated[
        Username | None, Query(description="give the user's live instances to this user")
    ] = None,
) -> Response:
    """The user can no longer log in, their tokens and webhooks go, and the name stays reserved.
    Their live instances are terminated or given to another user, as asked."""
    if settle is not None and transfer_to is not None:
        raise HTTPException(422, "Choose one: ?instances=terminate or ?transfer_to=<username>.")
    if username == admin.username:
        raise HTTPException(409, "You cannot delete yourself; ask another admin.")
    async with gw.outbox.transaction(db) as conn:
        target = await _target(conn, username)
        live = await instances.live_of_owner(conn, username)
        detail = await _settle(conn, live, username, settle, transfer_to, admin.username, gw)
        await _let_go(conn, username, gw)
        await identity.delete_user(conn, target.id, gw.clock())
        await audit.record(
            conn, actor=admin.username, action="user_deleted", target=username, detail=detail
        )
    return Response(status_code=204)


async def _settle(
    conn: asyncpg.Connection,
    live: list[InstanceOut],
    owner: str,
    settle: str | None,
    transfer_to: str | None,
    admin: str,
    gw: Gateway,
) -> dict[str, Any]:
    """Terminate or hand over the owner's live instances (and, handing over, their
    deployments), as the admin asked; the audit detail."""
    detail: dict[str, Any] = {"instances": len(live)}
    if transfer_to is not None:
        await _check_heir(conn, owner, transfer_to)
        given = await _transfer_deployments(conn, owner, transfer_to, admin, gw)
        if live:
            await _transfer(conn, live, owner, transfer_to, admin, gw)
        if given:
            detail["deployments"] = len(given)
        return detail | ({"transferred_to": transfer_to} if live or given else {})
    if not live:
        return detail
    if settle == "terminate":
        for found in live:
            await request_action(conn, found, InstanceAction.TERMINATE, admin, gw)
        return detail | {"terminated": True}
    raise HTTPException(
        409,
        f"{owner!r} owns {len(live)} live instance(s): delete with "
        "?instances=terminate or ?transfer_to=<username>.",
    )


async def _let_go(conn: asyncpg.Connection, username: str, gw: Gateway) -> None:
    """The user's webhooks stop and their grants go, each announced to the services."""
    for webhook_id in await webhooks.live_ids_of(conn, username):
        await webhooks.mark_deleted(conn, webhook_id, gw.clock())
        await announce_webhook(conn, webhook_id, gw.cipher)
    for account_id in await accounts.ungrant_everywhere(conn, username):
        await accounts.bump_revision(conn, account_id)
        await announce_account(conn, account_id)


async def _check_heir(conn: asyncpg.Connection, owner: str, recipient: str) -> None:
    if recipient == owner:
        raise HTTPException(422, "Transfer the instances to someone else than their owner.")
    if await identity.account_of(conn, recipient) is None:
        raise HTTPException(422, f"There is no user named {recipient!r} to transfer to.")


async def _transfer_deployments(
    conn: asyncpg.Connection, owner: str, recipient: str, admin: str, gw: Gateway
) -> list[uuid.UUID]:
    """The owner's deployments go to ``recipient`` with their instances: the heir sees, scales
    and deletes them, and their later members are the heir's."""
    given, deciding = await deployments.give_away(conn, owner, recipient, gw.clock())
    if deciding:
        raise HTTPException(
            409,
            f"{deciding} of {owner!r}'s deployments are still being decided; try again once "
            "they are admitted or rejected (a few seconds).",
            headers={"Retry-After": "5"},
        )
    for deployment_id in given:
        await add_to_outbox(
            conn,
            DeploymentOwnerChanged(
                deployment_id=deployment_id,
                owner=recipient,
                previous_owner=owner,
                changed_by=admin,
            ),
            source=gw.runtime.bus.source,
        )
    return given


async def _transfer(
    conn: asyncpg.Connection,
    live: list[InstanceOut],
    owner: str,
    recipient: str,
    admin: str,
    gw: Gateway,
) -> None:
    launching = sum(1 for found in live if found.state == "requested")
    if launching:
        # Until quota and the scheduler have taken a launch in, it is not theirs to move.
        raise HTTPException(
            409,
            f"{launching} of {owner!r}'s instances are still being launched; try again once "
            "they are pending (a few seconds).",
            headers={"Retry-After": "5"},
        )
    await instances.give_to(conn, [found.id for found in live], recipient, gw.clock())
    for found in live:
        await add_to_outbox(
            conn,
            InstanceOwnerChanged(
                instance_id=found.id,
                owner=recipient,
                previous_owner=owner,
                changed_by=admin,
                cpus=found.cpus,
                memory_mb=found.memory_mb,
            ),
            source=gw.runtime.bus.source,
        )
