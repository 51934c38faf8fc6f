"""Instances: launch, list, read, act on, terminate. Everything is scoped to its owner."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from datetime import datetime
from functools import partial
from typing import Annotated

import asyncpg
from fastapi import APIRouter, Header, HTTPException, Response

from services.gateway import held_launches
from services.gateway.deps import (
    CurrentUser,
    Db,
    Gateway,
    GatewayDep,
    visible_or_404,
)
from services.gateway.instance_actions import NothingToDo, Refused, Withdraw, decide
from services.gateway.launch_terms import LaunchTerms, launch_terms
from services.gateway.leases import LeaseRefused, lease_expired
from services.gateway.pagination import OwnedPage
from services.gateway.placement_check import PlacementRefused, check_placement
from services.gateway.problems import Responses
from services.gateway.repository import accounts, approvals, audit, catalogs, instances
from services.gateway.repository.catalogs import PricedAccount
from services.gateway.repository.identity import User
from services.gateway.schemas import InstanceOut, InstancePage, LaunchRequest
from shared import eligibility
from shared.events import (
    InstanceAction,
    InstanceActionRequested,
    InstanceLaunchRequested,
    InstanceState,
    Placement,
)
from shared.outbox import add_to_outbox

router = APIRouter(prefix="/v1/instances", tags=["instances"])

NOT_FOUND: Responses = {404: {"description": "no such instance (or not yours)"}}
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="Send the same key again with the same body to get the same instance back.",
    ),
]


def _digest(body: LaunchRequest) -> str:
    return hashlib.sha256(body.model_dump_json().encode()).hexdigest()


@router.post(
    "",
    status_code=202,
    response_model=InstanceOut,
    responses={
        409: {"description": "a concurrent request with the same key"},
        422: {"description": "invalid request, placement refused, or key reused"},
    },
)
async def launch(
    body: LaunchRequest,
    user: CurrentUser,
    db: Db,
    gw: GatewayDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> InstanceOut:
    fitting = eligibility.eligible(
        await catalogs.fitting_accounts(db, username=user.username, **body.placement.model_dump()),
        body.placement,
    )
    if not fitting:
        granted = await accounts.visible_accounts(db, username=user.username, everything=False)
        try:
            check_placement(body.placement, granted)
        except PlacementRefused as refused:
            raise HTTPException(422, str(refused)) from None
    digest = _digest(body)
    async with gw.outbox.transaction(db) as conn:
        if idempotency_key is not None:
            earlier = await instances.by_idempotency_key(conn, user.username, idempotency_key)
            if earlier is not None:
                return _replay(earlier, digest, response)
        now = gw.clock()
        terms = await _launch_terms(conn, body, user.username, fitting, now, gw)
        instance = await instances.insert_requested(
            conn,
            instance_id=uuid.uuid4(),
            owner=user.username,
            spec=body.model_dump(),
            idempotency_key=idempotency_key,
            request_digest=digest,
            now=now,
            expires_at=terms.lease.expires_at if terms.lease else None,
            approval_deadline=terms.approval_deadline,
        )
        if instance is None:  # a concurrent request with the same key won the insert
            earlier = await instances.by_idempotency_key(conn, user.username, idempotency_key or "")
            if earlier is None:  # ... and its instance has gone since: nothing to replay
                raise HTTPException(409, "This Idempotency-Key is in use; retry the request.")
            return _replay(earlier, digest, response)
        await add_to_outbox(
            conn,
            InstanceLaunchRequested(
                instance_id=instance.id,
                owner=user.username,
                name=body.name,
                image=body.image,
                cpus=body.cpus,
                memory_mb=body.memory_mb,
                placement=Placement(**body.placement.model_dump()),
                lease=terms.lease,
                price_per_hour=terms.price_per_hour,
                approval_rules=terms.approval_rules,
                approval_deadline=terms.approval_deadline,
            ),
            source=gw.runtime.bus.source,
        )
        await audit.record(
            conn,
            actor=user.username,
            action="instance_launch_requested",
            target=str(instance.id),
            detail={
                **body.model_dump(),
                "price_per_hour": terms.price_per_hour,
                "approval_rules": terms.approval_rules,
            },
        )
    response.headers["Location"] = f"/v1/instances/{instance.id}"
    return instance


async def _launch_terms(
    conn: asyncpg.Connection,
    body: LaunchRequest,
    owner: str,
    fitting: Sequence[PricedAccount],
    now: datetime,
    gw: Gateway,
) -> LaunchTerms:
    """The launch's terms (services.gateway.launch_terms); 422 past the lease policy's maximum."""
    policy, rules = await approvals.launch_terms(conn, owner)
    try:
        return launch_terms(
            policy,
            rules,
            owner=owner,
            cpus=body.cpus,
            memory_mb=body.memory_mb,
            lease_seconds=body.lease_seconds,
            fitting=fitting,
            now=now,
            approval_timeout=gw.settings.approval_timeout,
        )
    except LeaseRefused as refused:
        raise HTTPException(422, str(refused)) from None


def _replay(earlier: tuple[InstanceOut, str], digest: str, response: Response) -> InstanceOut:
    instance, earlier_digest = earlier
    if earlier_digest != digest:
        raise HTTPException(
            422, "This Idempotency-Key was used with a different request body; use a new key."
        )
    response.headers["Location"] = f"/v1/instances/{instance.id}"
    return instance


@router.get("", response_model=InstancePage, responses={400: {"description": "bad cursor"}})
async def list_instances(user: CurrentUser, db: Db, page: OwnedPage) -> InstancePage:
    items, next_cursor = await page.fetch(partial(instances.page, db), user)
    return InstancePage(items=items, next_cursor=next_cursor)


@router.get("/{instance_id}", response_model=InstanceOut, responses=NOT_FOUND)
async def get_instance(instance_id: str, user: CurrentUser, db: Db, gw: GatewayDep) -> InstanceOut:
    return await visible_or_404(
        partial(instances.visible_instance, db), "instance", instance_id, user
    )


async def _act(
    instance_id: str, action: InstanceAction, user: User, db: asyncpg.Connection, gw: Gateway
) -> InstanceOut:
    async with gw.outbox.transaction(db) as conn:
        found = await visible_or_404(
            partial(instances.visible_instance, conn), "instance", instance_id, user, lock=True
        )
        return await request_action(conn, found, action, user.username, gw)


async def request_action(
    conn: asyncpg.Connection,
    found: InstanceOut,
    action: InstanceAction,
    requested_by: str,
    gw: Gateway,
) -> InstanceOut:
    """Ask for ``action`` on the instance ``found`` (locked by the caller's transaction); the
    instance as it shows now. 409 when its state does not allow the action."""
    decision = decide(InstanceState(found.state), action)
    now = gw.clock()
    if isinstance(decision, NothingToDo):
        return found  # DELETE is idempotent
    if isinstance(decision, Refused):
        raise HTTPException(409, decision.reason)
    if isinstance(decision, Withdraw):
        return await held_launches.deny(
            conn,
            found,
            decided_by=requested_by,
            comment=None,
            reason=f"withdrawn by {requested_by}",
            now=now,
            source=gw.runtime.bus.source,
        )
    if action is InstanceAction.START and (expired := lease_expired(found.expires_at, now)):
        raise HTTPException(409, expired)
    if decision.shown is not None:
        await instances.set_state(conn, found.id, decision.shown.value, now)
        found = found.model_copy(update={"state": decision.shown.value, "updated_at": now})
    await add_to_outbox(
        conn,
        InstanceActionRequested(
            instance_id=found.id,
            owner=found.owner,
            action=action,
            requested_by=requested_by,
            account_id=found.account_id,
            provider_instance_id=found.provider_instance_id,
        ),
        source=gw.runtime.bus.source,
    )
    await audit.record(
        conn,
        actor=requested_by,
        action=f"instance_{action.value}_requested",
        target=str(found.id),
    )
    return found


ACTION_RESPONSES: Responses = {
    **NOT_FOUND,
    409: {"description": "not possible in the instance's state"},
}


@router.post(
    "/{instance_id}/stop", status_code=202, response_model=InstanceOut, responses=ACTION_RESPONSES
)
async def stop(instance_id: str, user: CurrentUser, db: Db, gw: GatewayDep) -> InstanceOut:
    return await _act(instance_id, InstanceAction.STOP, user, db, gw)


@router.post(
    "/{instance_id}/start", status_code=202, response_model=InstanceOut, responses=ACTION_RESPONSES
)
async def start(instance_id: str, user: CurrentUser, db: Db, gw: GatewayDep) -> InstanceOut:
    return await _act(instance_id, InstanceAction.START, user, db, gw)


@router.post(
    "/{instance_id}/reboot", status_code=202, response_model=InstanceOut, responses=ACTION_RESPONSES
)
async def reboot(instance_id: str, user: CurrentUser, db: Db, gw: GatewayDep) -> InstanceOut:
    return await _act(instance_id, InstanceAction.REBOOT, user, db, gw)


@router.delete("/{instance_id}", status_code=202, response_model=InstanceOut, responses=NOT_FOUND)
async def terminate(instance_id: str, user: CurrentUser, db: Db, gw: GatewayDep) -> InstanceOut:
    return await _act(instance_id, InstanceAction.TERMINATE, user, db, gw)
