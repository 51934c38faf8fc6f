"""The scheduler's handlers: record what is owed to clouds; the cloud worker makes the calls.

No handler calls a cloud: each records the call in its transaction (with the inbox row of the
event that asked for it) and wakes the worker once committed (:mod:`services.scheduler.worker`).
"""

from __future__ import annotations

import structlog

from services.scheduler import repository
from services.scheduler.catalogs import CatalogCache
from services.scheduler.orchestrator import follow_deployment, follow_member
from services.scheduler.placement import Request
from services.scheduler.ports import CallsRepository, Waker
from services.scheduler.repository import InstancePlacement, PendingLaunch
from services.scheduler.worker import AccountBook
from shared.clouds.connections import CloudConnections
from shared.consumer import Subscription, UnitOfWork
from shared.events import (
    DeploymentAdmitted,
    DeploymentDeleteRequested,
    DeploymentOwnerChanged,
    DeploymentRefused,
    DeploymentScaleAdmitted,
    InstanceAction,
    InstanceActionRequested,
    InstanceApproved,
    InstanceDenied,
    InstanceFailed,
    InstanceLaunchAdmitted,
    InstanceLeaseExtended,
    InstanceOwnerChanged,
    InstanceState,
    InstanceStateChanged,
    ProviderAccountChanged,
)
from shared.ordering import OrderKey

log = structlog.get_logger(__name__)


async def record_account(
    event: ProviderAccountChanged,
    uow: UnitOfWork,
    *,
    clouds: CloudConnections,
    catalogs: CatalogCache,
    book: AccountBook,
) -> None:
    """The newest revision of an account; a deleted one leaves the candidates (the book reads
    live accounts only) with its catalog and cloud connection forgotten."""
    await repository.upsert_account(uow.conn, event)
    uow.after_commit(book.forget)
    uow.after_commit(lambda: catalogs.forget(event.account_id))
    uow.after_commit(lambda: clouds.forget(event.account_id))


async def place_launch(
    event: InstanceLaunchAdmitted,
    uow: UnitOfWork,
    *,
    worker: Waker,
    repo: CallsRepository = repository,
) -> None:
    await repo.lock_instance(uow.conn, event.instance_id)
    await repo.add_launch(
        uow.conn,
        event.instance_id,
        Request(
            owner=event.owner,
            image=event.image,
            cpus=event.cpus,
            memory_mb=event.memory_mb,
            provider=event.placement.provider,
            account=event.placement.account,
            region=event.placement.region,
            price_per_hour=event.price_per_hour,
            deployment_id=None if event.deployment_id is None else str(event.deployment_id),
            group=event.group,
            spread=event.spread,
        ),
    )
    if event.lease is not None:
        # The expiry is the scheduler's from now on (services.scheduler.lease_checks).
        await repo.add_lease(uow.conn, event.instance_id, event.owner, event.lease)
    uow.after_commit(worker.wake)


def _never_sent(placement: InstancePlacement | None, launch: PendingLaunch | None) -> bool:
    """No cloud was asked to create the instance: neither placed nor launching, or its launch
    untouched."""
    return (placement is None and launch is None) or (launch is not None and launch.untouched)


async def _cancel_before_placement(
    event: InstanceActionRequested,
    uow: UnitOfWork,
    repo: CallsRepository,
    launch: PendingLaunch | None,
) -> None:
    """Ended before any cloud was asked: make sure none ever is, and say so."""
    if launch is not None:
        await repo.cancel_call(uow.conn, launch.id)
    await repo.record(uow.conn, InstancePlacement(event.instance_id, event.owner, "cancelled"))
    await repo.end_lease(uow.conn, event.instance_id, event.owner)
    await uow.publish(
        InstanceFailed(
            instance_id=event.instance_id,
            owner=event.owner,
            reason="terminated before it was placed",
        )
    )


async def carry_out_action(
    event: InstanceActionRequested,
    uow: UnitOfWork,
    *,
    worker: Waker,
    repo: CallsRepository = repository,
) -> None:
    await repo.lock_instance(uow.conn, event.instance_id)
    placement = await repo.placement(uow.conn, event.instance_id)
    launch = await repo.pending_launch(uow.conn, event.instance_id)
    if event.action is InstanceAction.TERMINATE and _never_sent(placement, launch):
        await _cancel_before_placement(event, uow, repo, launch)
        return
    if launch is None and (placement is None or not placement.on_a_cloud):
        return  # failed or cancelled: nothing on any cloud to act on
    # Queued behind the launch when there is one: the worker keeps an instance's calls in order.
    # For the owner the placement names: an action asked for before the instance was given to
    # another user may arrive after the change (another queue).
    await repo.add_call(
        uow.conn,
        event.instance_id,
        owner=placement.owner if placement is not None else event.owner,
        action=event.action.value,
    )
    uow.after_commit(worker.wake)


async def change_owner(event: InstanceOwnerChanged, uow: UnitOfWork) -> None:
    """An admin gave the instance to another user: what the scheduler records and publishes
    for it from now on names the new owner."""
    await repository.lock_instance(uow.conn, event.instance_id)
    await repository.change_owner(uow.conn, event.instance_id, event.owner)


async def follow_state(event: InstanceStateChanged, uow: UnitOfWork) -> None:
    """A terminated instance no longer counts on its account's load, nor has a lease; the
    state of the others is kept for their lease's expiry (no stop of a stopped instance)."""
    if event.new_state is InstanceState.TERMINATED:
        await repository.end_placement(uow.conn, event.instance_id)
        await repository.end_lease(uow.conn, event.instance_id, event.owner)
    else:
        await repository.note_state(
            uow.conn, event.instance_id, event.new_state.value, event.observed_at
        )


async def extend_lease(event: InstanceLeaseExtended, uow: UnitOfWork) -> None:
    """The lease moves to its new expiry, warning and expiry armed again."""
    await repository.lock_instance(uow.conn, event.instance_id)
    if not await repository.extend_lease(
        uow.conn, event.instance_id, event.owner, event.expires_at
    ):
        log.info("lease_extension_ignored", expires_at=event.expires_at.isoformat())


# Dependencies by keyword (shared.injection): clouds, catalogs, book and worker, from bootstrap.py.
SUBSCRIPTIONS = (
    Subscription(ProviderAccountChanged, record_account, order_by=OrderKey.ACCOUNT),
    Subscription(
        InstanceLaunchAdmitted,
        place_launch,
        order_by=OrderKey.INSTANCE,
        dedupe=False,  # a launch is recorded once, whatever comes again (add_launch)
    ),
    Subscription(InstanceActionRequested, carry_out_action, order_by=OrderKey.INSTANCE),
    # Inbox kept: a copy of an earlier change delivered after a later one is skipped.
    Subscription(InstanceOwnerChanged, change_owner, order_by=OrderKey.INSTANCE),
    Subscription(
        InstanceStateChanged,
        follow_state,
        order_by=OrderKey.INSTANCE,
        # A placement ends once (end_placement moves only 'placed' rows), a lease too, and a
        # state seen is kept only if seen later than the one kept.
        dedupe=False,
    ),
    Subscription(InstanceLeaseExtended, extend_lease, order_by=OrderKey.INSTANCE),
    # Deployments (services.scheduler.orchestrator): one queue for a deployment's own events,
    # in order per deployment (their subject), and one for its members' instance events, in
    # order per instance; each step locks the deployment's row, so the two never race.
    Subscription(
        (
            DeploymentAdmitted,
            DeploymentRefused,
            DeploymentScaleAdmitted,
            DeploymentDeleteRequested,
            DeploymentOwnerChanged,
        ),
        follow_deployment,
        order_by=OrderKey.INSTANCE,
    ),
    Subscription(
        (InstanceStateChanged, InstanceFailed, InstanceApproved, InstanceDenied),
        follow_member,
        order_by=OrderKey.INSTANCE,
        # Every instance's events come here, members or not: no inbox row for each, as a copy
        # changes nothing (a member's final states stay, an answer applies once, and the step
        # is level-triggered).
        dedupe=False,
    ),
)
