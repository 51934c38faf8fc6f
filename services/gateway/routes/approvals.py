"""Approvals: the rules that hold launches (admins), and answering a held launch (admins, or an
external system with an admin's token)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial

from fastapi import APIRouter, HTTPException

from services.gateway import held_launches
from services.gateway.deps import AdminUser, Db, GatewayDep, visible_or_404
from services.gateway.problems import ADMINS_ONLY, Responses
from services.gateway.repository import approvals, audit, instances
from services.gateway.schemas import ApprovalDecision, ApprovalRules, InstanceOut
from shared.events import InstanceState

router = APIRouter(tags=["approvals"])

DECISION_RESPONSES: Responses = {
    **ADMINS_ONLY,
    404: {"description": "no such instance"},
    409: {"description": "the instance is not awaiting approval"},
}


@router.put("/v1/approval-rules", response_model=ApprovalRules, responses=ADMINS_ONLY)
async def set_approval_rules(body: ApprovalRules, admin: AdminUser, db: Db) -> ApprovalRules:
    """Replace every rule; launches from now on are held by the new ones."""
    async with db.transaction():
        await approvals.replace_rules(db, body.rules)
        await audit.record(
            db,
            actor=admin.username,
            action="approval_rules_set",
            detail=body.model_dump(exclude_none=True),
        )
        return ApprovalRules(rules=await approvals.rules(db))


@router.get("/v1/approval-rules", response_model=ApprovalRules, responses=ADMINS_ONLY)
async def get_approval_rules(admin: AdminUser, db: Db) -> ApprovalRules:
    return ApprovalRules(rules=await approvals.rules(db))


async def _held(instance_id: str, admin: AdminUser, conn: Db) -> InstanceOut:
    """The instance, locked, if it is awaiting approval; 404 or 409 otherwise."""
    found = await visible_or_404(
        partial(instances.visible_instance, conn), "instance", instance_id, admin, lock=True
    )
    if found.state != InstanceState.AWAITING_APPROVAL.value:
        raise HTTPException(
            409, f"Only a launch awaiting approval can be answered; this one is {found.state}."
        )
    return found


# held_launches.approve, or deny with its reason: what answering a held launch does to it.
Answer = Callable[..., Awaitable[InstanceOut]]


async def _answer(
    answer: Answer,
    instance_id: str,
    admin: AdminUser,
    db: Db,
    gw: GatewayDep,
    body: ApprovalDecision | None,
) -> InstanceOut:
    """The held launch answered by ``admin`` under its row lock, published and audited."""
    async with gw.outbox.transaction(db) as conn:
        return await answer(
            conn,
            await _held(instance_id, admin, conn),
            decided_by=admin.username,
            comment=body.comment if body else None,
            now=gw.clock(),
            source=gw.runtime.bus.source,
        )


@router.post(
    "/v1/instances/{instance_id}/approve",
    response_model=InstanceOut,
    responses=DECISION_RESPONSES,
    tags=["instances"],
)
async def approve(
    instance_id: str, admin: AdminUser, db: Db, gw: GatewayDep, body: ApprovalDecision | None = None
) -> InstanceOut:
    return await _answer(held_launches.approve, instance_id, admin, db, gw, body)


@router.post(
    "/v1/instances/{instance_id}/deny",
    response_model=InstanceOut,
    responses=DECISION_RESPONSES,
    tags=["instances"],
)
async def deny(
    instance_id: str, admin: AdminUser, db: Db, gw: GatewayDep, body: ApprovalDecision | None = None
) -> InstanceOut:
    reason = held_launches.denial_reason(admin.username, body.comment if body else None)
    return await _answer(
        partial(held_launches.deny, reason=reason), instance_id, admin, db, gw, body
    )
