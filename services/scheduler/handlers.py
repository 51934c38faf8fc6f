"""The scheduler: places launches on provider accounts and carries out instance actions."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from services.scheduler import repository
from services.scheduler.cloud_calls import act_on_node, catalog_of, describe, launch_node
from services.scheduler.placement import (
    Account,
    Offer,
    Request,
    eligible_accounts,
    explain,
    offer_for,
    rank,
)
from shared.clouds.connections import CloudConnections
from shared.consumer import Subscription, UnitOfWork
from shared.events import (
    InstanceAction,
    InstanceActionRequested,
    InstanceFailed,
    InstanceLaunchAdmitted,
    InstancePlaced,
    ProviderAccountChanged,
)
from shared.ordering import OrderKey

log = structlog.get_logger(__name__)


async def record_account(
    event: ProviderAccountChanged, uow: UnitOfWork, *, clouds: CloudConnections
) -> None:
    await repository.upsert_account(uow.conn, event)
    clouds.forget(event.account_id)


async def _lock_instance(uow: UnitOfWork, instance_id: object) -> None:
    # Launch and action handlers of one instance run on different queues: serialise them.
    await uow.conn.execute(
        "SELECT pg_advisory_xact_lock(hashtext('boreas.scheduler.' || $1))", str(instance_id)
    )


def _account(row: dict[str, Any]) -> Account:
    return Account(row["id"], row["name"], row["provider"], frozenset(row["grants"]), row["config"])


async def place_launch(
    event: InstanceLaunchAdmitted, uow: UnitOfWork, *, clouds: CloudConnections
) -> None:
    await _lock_instance(uow, event.instance_id)
    if await repository.placement(uow.conn, event.instance_id) is not None:
        return  # placed, failed or cancelled already
    request = Request(
        owner=event.owner,
        image=event.image,
        cpus=event.cpus,
        memory_mb=event.memory_mb,
        provider=event.placement.provider,
        account=event.placement.account,
        region=event.placement.region,
    )
    rows = {row["id"]: row for row in await repository.all_accounts(uow.conn)}
    eligible = eligible_accounts([_account(r) for r in rows.values()], request)
    loads = await repository.load_by_account(uow.conn)
    attempts: list[str] = []
    offers: list[Offer] = []
    for account in eligible:
        try:
            driver = await clouds.driver(rows[account.id])
            catalog = await asyncio.to_thread(catalog_of, driver)
        except Exception as error:
            attempts.append(f"{account.name}: {describe(error)}")
            continue
        load = loads.get(account.id, 0)
        limit = account.config.get("max_instances")
        headroom = int(limit) - load if isinstance(limit, int) else None
        offer = offer_for(account, catalog, request, load=load, headroom=headroom)
        (attempts.append if isinstance(offer, str) else offers.append)(offer)

    ranked = rank(offers)
    for tried, offer in enumerate(ranked, 1):
        driver = await clouds.driver(rows[offer.account.id])
        name = f"boreas-{str(event.instance_id)[:8]}"
        try:
            node = await asyncio.to_thread(
                launch_node,
                driver,
                offer,
                event.instance_id,
                name,
                offer.account.config.get("metadata"),
            )
        except Exception as error:
            attempts.append(f"{offer.account.name}: {describe(error)}")
            log.warning("launch_attempt_failed", account=offer.account.name, error=describe(error))
            continue
        await repository.record(
            uow.conn,
            event.instance_id,
            owner=event.owner,
            status="placed",
            account_id=offer.account.id,
            provider_instance_id=str(node.id),
        )
        await uow.publish(
            InstancePlaced(
                instance_id=event.instance_id,
                owner=event.owner,
                account_id=offer.account.id,
                provider=offer.account.provider,
                provider_instance_id=str(node.id),
                region=offer.region,
                reason=explain(offer, tried, len(ranked)),
                cpus=event.cpus,
                memory_mb=event.memory_mb,
            )
        )
        return

    await repository.record(uow.conn, event.instance_id, owner=event.owner, status="failed")
    reason = (
        "no candidate account could launch it"
        if eligible
        else "no account granted to the owner matches the placement"
    )
    await uow.publish(
        InstanceFailed(
            instance_id=event.instance_id, owner=event.owner, reason=reason, attempts=attempts
        )
    )


async def carry_out_action(
    event: InstanceActionRequested, uow: UnitOfWork, *, clouds: CloudConnections
) -> None:
    await _lock_instance(uow, event.instance_id)
    placement = await repository.placement(uow.conn, event.instance_id)
    if placement is None or placement["status"] != "placed":
        if event.action is InstanceAction.TERMINATE and placement is None:
            # Ended before it was placed: make sure it never is, and say so.
            await repository.record(
                uow.conn, event.instance_id, owner=event.owner, status="cancelled"
            )
            await uow.publish(
                InstanceFailed(
                    instance_id=event.instance_id,
                    owner=event.owner,
                    reason="terminated before it was placed",
                )
            )
        return
    account = await repository.account(uow.conn, placement["account_id"])
    if account is None:
        log.error("action_on_unknown_account", account_id=placement["account_id"])
        return
    driver = await clouds.driver(account)
    try:
        await asyncio.to_thread(
            act_on_node, driver, placement["provider_instance_id"], event.action.value
        )
    except Exception as error:
        # The poller reports what really happened; a refused action is logged, not retried
        # forever (e.g. stopping a node that has just died).
        log.warning("action_refused_by_cloud", action=event.action.value, error=describe(error))


def subscriptions(*, clouds: CloudConnections) -> list[Subscription]:
    def bound(handler: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
        return functools.partial(handler, clouds=clouds)

    return [
        Subscription(
            ProviderAccountChanged,
            bound(record_account),
            name="record_account",
            order_by=OrderKey.ACCOUNT,
        ),
        Subscription(
            InstanceLaunchAdmitted,
            bound(place_launch),
            name="place_launch",
            order_by=OrderKey.INSTANCE,
        ),
        Subscription(
            InstanceActionRequested,
            bound(carry_out_action),
            name="carry_out_action",
            order_by=OrderKey.INSTANCE,
        ),
    ]
