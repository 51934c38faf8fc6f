"""Deployments: many instances launched, admitted and deleted as one. The gateway checks the
template and writes the read model (the deployment and one instance row per member); quota admits
the whole, the scheduler orchestrates it. Everything is scoped to its owner."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from functools import partial
from typing import Any

import asyncpg
from fastapi import APIRouter, HTTPException, Request, Response

from services.gateway.deployment_requests import (
    BodyUnreadable,
    document_of,
    member_name,
    read_document,
    request_of,
    spread_refusal,
    template_of,
)
from services.gateway.deps import CurrentUser, Db, Gateway, GatewayDep, visible_or_404
from services.gateway.launch_terms import LaunchTerms, launch_terms
from services.gateway.leases import LeaseRefused
from services.gateway.pagination import OwnedPage
from services.gateway.placement_check import PlacementRefused, check_placement
from services.gateway.problems import FieldsRefused, Responses
from services.gateway.repository import accounts, approvals, audit, catalogs, deployments, instances
from services.gateway.repository.deployments import Deployment
from services.gateway.repository.identity import User
from services.gateway.routes.instances import IdempotencyKey
from services.gateway.schemas import (
    ApprovalRule,
    DeploymentOut,
    DeploymentPage,
    DeploymentRequest,
    DeploymentScale,
    LeasePolicy,
)
from shared import eligibility, templates
from shared.events import (
    DeploymentDeleteRequested,
    DeploymentMember,
    DeploymentRequested,
    DeploymentScaleRequested,
    Placement,
)
from shared.outbox import add_to_outbox
from shared.templates import Group, Problem

router = APIRouter(prefix="/v1/deployments", tags=["deployments"])

NOT_FOUND: Responses = {404: {"description": "no such deployment (or not yours)"}}
# States a deployment may be scaled in: it has been admitted and is not ending.
SCALABLE = ("creating", "running", "degraded")

_REQUEST_SCHEMA = DeploymentRequest.model_json_schema()
REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": (
            "The template is described by docs/deployment-template.schema.json; "
            "{{ name }} in its string fields takes parameters[name]."
        ),
        "content": {
            "application/json": {"schema": _REQUEST_SCHEMA},
            "application/yaml": {"schema": _REQUEST_SCHEMA},
        },
    }
}


@dataclass(frozen=True)
class _GroupPlan:
    """A group's members as they are to be asked for: the accounts it may go to, its terms."""

    group: Group
    fitting: list[catalogs.PricedAccount]
    terms: LaunchTerms


def _digest(request: DeploymentRequest) -> str:
    canonical = json.dumps(request.model_dump(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@router.post(
    "",
    status_code=202,
    response_model=DeploymentOut,
    responses={
        400: {"description": "the body is not JSON (or YAML)"},
        409: {"description": "a concurrent request with the same key"},
        422: {"description": "invalid request or template (errors point at each field)"},
    },
    openapi_extra=REQUEST_BODY,
)
async def create(
    request: Request,
    user: CurrentUser,
    db: Db,
    gw: GatewayDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> DeploymentOut:
    try:
        document = read_document(await request.body(), request.headers.get("content-type"))
    except BodyUnreadable as unreadable:
        raise HTTPException(400, str(unreadable)) from None
    body = request_of(document)
    template = template_of(body)
    digest = _digest(body)
    now = gw.clock()
    plans = await _plans(db, user.username, template, now, gw)
    async with gw.outbox.transaction(db) as conn:
        if idempotency_key is not None:
            earlier = await deployments.by_idempotency_key(conn, user.username, idempotency_key)
            if earlier is not None:
                return await _replay(conn, earlier, digest, response)
        deployment = await deployments.insert(
            conn,
            deployment_id=uuid.uuid4(),
            owner=user.username,
            name=body.name,
            template=document_of(template),
            parameters=body.parameters,
            idempotency_key=idempotency_key,
            request_digest=digest,
            now=now,
        )
        if deployment is None:  # a concurrent request with the same key won the insert
            earlier = await deployments.by_idempotency_key(
                conn, user.username, idempotency_key or ""
            )
            if earlier is None:
                raise HTTPException(409, "This Idempotency-Key is in use; retry the request.")
            return await _replay(conn, earlier, digest, response)
        members = []
        for plan in plans:
            members += await _add_members(conn, deployment, plan, 1, plan.group.count, now)
        await _request(
            conn,
            gw,
            DeploymentRequested(
                deployment_id=deployment.id,
                owner=user.username,
                name=body.name,
                template=deployment.template,
                members=members,
                approval_deadline=_deadline(plans),
            ),
            actor=user.username,
            action="deployment_requested",
            detail={
                "name": body.name,
                "template": deployment.template,
                "parameters": body.parameters,
                "members": len(members),
                "approval_rules": sorted({r for m in members for r in m.approval_rules}),
            },
        )
        return await _created(conn, deployment, response)


async def _plans(
    db: asyncpg.Connection, owner: str, template: templates.Template, now: datetime, gw: Gateway
) -> list[_GroupPlan]:
    """Each group's accounts and terms; FieldsRefused naming every group whose placement,
    spread or lease cannot be."""
    policy, rules = await approvals.launch_terms(db, owner)
    plans: list[_GroupPlan] = []
    problems: list[Problem] = []
    for index, group in enumerate(template.groups):
        try:
            plans.append(
                await _plan(db, owner, group, group.count, policy, rules, now, gw, index=index)
            )
        except FieldsRefused as refused:
            problems += refused.problems
    if problems:
        raise FieldsRefused(problems)
    return plans


async def _plan(
    db: asyncpg.Connection,
    owner: str,
    group: Group,
    count: int,
    policy: LeasePolicy,
    rules: list[ApprovalRule],
    now: datetime,
    gw: Gateway,
    *,
    index: int | None,
) -> _GroupPlan:
    """``count`` members of ``group``: where they may go and on what terms (FieldsRefused at
    the group's field, ``index`` None: a scaling, at ``/group`` or ``/count``)."""

    def at(field: str) -> str:
        if index is None:
            return "/count" if field == "spread" else "/group"
        return templates.pointer("template", "groups", index, field)

    fitting = eligibility.eligible(
        await catalogs.fitting_accounts(db, username=owner, **asdict(group.placement)),
        group.placement,
    )
    if not fitting:
        granted = await accounts.visible_accounts(db, username=owner, everything=False)
        try:
            check_placement(group.placement, granted)
        except PlacementRefused as refused:
            raise FieldsRefused([Problem(at("placement"), str(refused))]) from None
    refusal = spread_refusal(group, count, fitting)
    if refusal is not None:
        raise FieldsRefused([Problem(at("spread"), refusal)])
    try:
        terms = launch_terms(
            policy,
            rules,
            owner=owner,
            cpus=group.cpus,
            memory_mb=group.memory_mb,
            lease_seconds=group.lease_seconds,
            fitting=fitting,
            now=now,
            approval_timeout=gw.settings.approval_timeout,
        )
    except LeaseRefused as refused:
        raise FieldsRefused([Problem(at("lease_seconds"), str(refused))]) from None
    return _GroupPlan(group, fitting, terms)


async def _add_members(
    conn: asyncpg.Connection,
    deployment: Deployment,
    plan: _GroupPlan,
    first: int,
    count: int,
    now: datetime,
) -> list[DeploymentMember]:
    """Rows (``requested``) for members ``first`` … ``first + count - 1`` of the plan's group."""
    group, terms = plan.group, plan.terms
    members = []
    for number in range(first, first + count):
        member = DeploymentMember(
            instance_id=uuid.uuid4(),
            group=group.name,
            name=member_name(deployment.name, group.name, number),
            image=group.image,
            cpus=group.cpus,
            memory_mb=group.memory_mb,
            placement=Placement(**asdict(group.placement)),
            spread=group.spread,
            lease=terms.lease,
            price_per_hour=terms.price_per_hour,
            approval_rules=terms.approval_rules,
        )
        await instances.insert_requested(
            conn,
            instance_id=member.instance_id,
            owner=deployment.owner,
            spec={
                "name": member.name,
                "image": member.image,
                "cpus": member.cpus,
                "memory_mb": member.memory_mb,
                "placement": asdict(group.placement),
            },
            idempotency_key=None,
            request_digest=None,
            now=now,
            expires_at=terms.lease.expires_at if terms.lease else None,
            approval_deadline=terms.approval_deadline,
            deployment_id=deployment.id,
            group=group.name,
        )
        members.append(member)
    return members


def _deadline(plans: list[_GroupPlan]) -> datetime | None:
    deadlines = [p.terms.approval_deadline for p in plans if p.terms.approval_deadline]
    return min(deadlines) if deadlines else None


async def _replay(
    conn: asyncpg.Connection,
    earlier: tuple[Deployment, str],
    digest: str,
    response: Response,
) -> DeploymentOut:
    deployment, earlier_digest = earlier
    if earlier_digest != digest:
        raise HTTPException(
            422, "This Idempotency-Key was used with a different request body; use a new key."
        )
    return await _created(conn, deployment, response)


async def _created(
    conn: asyncpg.Connection, deployment: Deployment, response: Response
) -> DeploymentOut:
    response.headers["Location"] = f"/v1/deployments/{deployment.id}"
    return await _shown(conn, deployment)


async def _shown(conn: asyncpg.Connection | asyncpg.Pool, deployment: Deployment) -> DeploymentOut:
    (shown,) = await deployments.with_groups(conn, [deployment])
    return shown


async def _locked(conn: asyncpg.Connection, deployment_id: str, user: User) -> Deployment:
    """The deployment, locked for the caller's transaction, if ``user`` may see it (404 if not)."""
    return await visible_or_404(
        partial(deployments.visible_deployment, conn),
        "deployment",
        deployment_id,
        user,
        lock=True,
    )


async def _request(
    conn: asyncpg.Connection,
    gw: Gateway,
    event: DeploymentRequested | DeploymentScaleRequested | DeploymentDeleteRequested,
    *,
    actor: str,
    action: str,
    detail: dict[str, Any] | None = None,
) -> None:
    """``event`` published with the caller's transaction, and ``action`` audited."""
    await add_to_outbox(conn, event, source=gw.runtime.bus.source)
    await audit.record(
        conn, actor=actor, action=action, target=str(event.deployment_id), detail=detail
    )


@router.get("", response_model=DeploymentPage, responses={400: {"description": "bad cursor"}})
async def list_deployments(user: CurrentUser, db: Db, page: OwnedPage) -> DeploymentPage:
    items, next_cursor = await page.fetch(partial(deployments.page, db), user)
    return DeploymentPage(items=await deployments.with_groups(db, items), next_cursor=next_cursor)


@router.get("/{deployment_id}", response_model=DeploymentOut, responses=NOT_FOUND)
async def get_deployment(deployment_id: str, user: CurrentUser, db: Db) -> DeploymentOut:
    found = await visible_or_404(
        partial(deployments.visible_deployment, db), "deployment", deployment_id, user
    )
    return await _shown(db, found)


@router.post(
    "/{deployment_id}/scale",
    status_code=202,
    response_model=DeploymentOut,
    responses={
        **NOT_FOUND,
        409: {"description": "not possible in the deployment's state"},
        422: {"description": "no such group, or the added instances cannot be placed"},
    },
)
async def scale(
    deployment_id: str, body: DeploymentScale, user: CurrentUser, db: Db, gw: GatewayDep
) -> DeploymentOut:
    async with gw.outbox.transaction(db) as conn:
        found = await _locked(conn, deployment_id, user)
        groups = found.template["groups"]
        index = next((i for i, g in enumerate(groups) if g["name"] == body.group), None)
        if index is None:
            known = ", ".join(g["name"] for g in groups)
            raise FieldsRefused(
                [Problem("/group", f"this deployment has no group {body.group!r} ({known})")]
            )
        if found.state not in SCALABLE:
            raise HTTPException(
                409, f"A deployment that is {found.state} cannot be scaled (only {SCALABLE})."
            )
        current = groups[index]["count"]
        if body.count == current:
            return await _shown(conn, found)
        now = gw.clock()
        added: list[DeploymentMember] = []
        deadline = None
        if body.count > current:
            group = templates.parse(found.template).groups[index]
            policy, rules = await approvals.launch_terms(conn, found.owner)
            plan = await _plan(
                conn, found.owner, group, body.count, policy, rules, now, gw, index=None
            )
            before = await deployments.members_ever(conn, found.id, group.name)
            added = await _add_members(conn, found, plan, before + 1, body.count - current, now)
            deadline = plan.terms.approval_deadline
        groups[index] = {**groups[index], "count": body.count}
        await deployments.set_template(conn, found.id, found.template, now)
        await _request(
            conn,
            gw,
            DeploymentScaleRequested(
                deployment_id=found.id,
                owner=found.owner,
                group=body.group,
                count=body.count,
                added=added,
                requested_by=user.username,
                approval_deadline=deadline,
            ),
            actor=user.username,
            action="deployment_scale_requested",
            detail={"group": body.group, "from": current, "count": body.count},
        )
        return await _shown(conn, await _reread(conn, found.id))


async def _reread(conn: asyncpg.Connection, deployment_id: uuid.UUID) -> Deployment:
    found = await deployments.visible_deployment(conn, deployment_id, viewer="", everything=True)
    assert found is not None  # locked by the caller's transaction
    return found


@router.delete(
    "/{deployment_id}", status_code=202, response_model=DeploymentOut, responses=NOT_FOUND
)
async def delete(deployment_id: str, user: CurrentUser, db: Db, gw: GatewayDep) -> DeploymentOut:
    async with gw.outbox.transaction(db) as conn:
        found = await _locked(conn, deployment_id, user)
        if found.state not in ("deleting", "deleted"):  # DELETE is idempotent
            await deployments.start_deleting(conn, found.id, gw.clock())
            await _request(
                conn,
                gw,
                DeploymentDeleteRequested(
                    deployment_id=found.id, owner=found.owner, requested_by=user.username
                ),
                actor=user.username,
                action="deployment_delete_requested",
            )
            found = await _reread(conn, found.id)
        return await _shown(conn, found)
