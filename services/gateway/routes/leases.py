"""Leases: admins set a user's lease policy, admins and that user read it; owners and admins
extend an instance's lease within its owner's policy."""

from __future__ import annotations

from functools import partial

from fastapi import APIRouter, HTTPException

from services.gateway.deps import AdminUser, CurrentUser, Db, GatewayDep, visible_or_404
from services.gateway.leases import LeaseRefused, extended_end
from services.gateway.problems import ADMINS_ONLY, Responses
from services.gateway.repository import audit, identity, instances, leases
from services.gateway.schemas import InstanceOut, LeaseExtension, LeasePolicy
from shared.events import InstanceLeaseExtended, InstanceState
from shared.outbox import add_to_outbox

router = APIRouter(tags=["leases"])

NOT_FOUND: Responses = {404: {"description": "no such user (or not you)"}}


@router.put(
    "/v1/lease-policies/{username}",
    response_model=LeasePolicy,
    responses={**ADMINS_ONLY, **NOT_FOUND},
)
async def set_lease_policy(
    username: str, body: LeasePolicy, admin: AdminUser, db: Db
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


@router.get("/v1/lease-policies/{username}", response_model=LeasePolicy, responses=NOT_FOUND)
async def get_lease_policy(username: str, user: CurrentUser, db: Db) -> LeasePolicy:
    if not user.is_admin and user.username != username:
        raise HTTPException(404, f"There is no lease policy of {username!r} for you to see.")
    if not await identity.user_exists(db, username):
        raise HTTPException(404, f"There is no user named {username!r}.")
    return await leases.policy_of(db, username)


# States where a lease means nothing any more: the instance is gone, or never was.
_ENDED = frozenset({InstanceState.TERMINATED, InstanceState.REJECTED, InstanceState.DENIED})


@router.post(
    "/v1/instances/{instance_id}/extend",
    response_model=InstanceOut,
    tags=["instances"],
    responses={
        404: {"description": "no such instance (or not yours)"},
        409: {"description": "the instance has no lease, or has ended"},
        422: {"description": "past the lease policy's maximum"},
    },
)
async def extend_lease(
    instance_id: str, body: LeaseExtension, user: CurrentUser, db: Db, gw: GatewayDep
) -> InstanceOut:
    """Move the lease's end to max(its end, now) + ``seconds``, within the owner's policy."""
    async with gw.outbox.transaction(db) as conn:
        found = await visible_or_404(
            partial(instances.visible_instance, conn), "instance", instance_id, user, lock=True
        )
        if found.expires_at is None:
            raise HTTPException(409, "This instance has no lease to extend.")
        if InstanceState(found.state) in _ENDED:
            raise HTTPException(
                409, f"Cannot extend the lease of an instance that is {found.state}."
            )
        now = gw.clock()
        try:
            end = extended_end(
                await leases.policy_of(conn, found.owner), found.expires_at, body.seconds, now
            )
        except LeaseRefused as refused:
            raise HTTPException(422, str(refused)) from None
        await instances.extend_lease(conn, found.id, end, now)
        await add_to_outbox(
            conn,
            InstanceLeaseExtended(
                instance_id=found.id, owner=found.owner, expires_at=end, extended_by=user.username
            ),
            source=gw.runtime.bus.source,
        )
        await audit.record(
            conn,
            actor=user.username,
            action="instance_lease_extended",
            target=str(found.id),
            detail={"seconds": body.seconds, "expires_at": end.isoformat()},
        )
        return found.model_copy(update={"expires_at": end, "updated_at": now})
