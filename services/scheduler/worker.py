"""The cloud worker: makes the calls the scheduler's handlers recorded, outside any transaction.

A handler only records what is owed (``cloud_calls``) and commits. This worker leases due calls
(the oldest pending one per instance, so an instance's calls keep their order), makes many at
once within each account's call budget, and records each outcome with its event in one
transaction. The sequence for a launch is: choose offers (catalogs from memory, loads from the
database), reserve room on an account and note it on the call (commit), create the node (cloud),
record the placement and ``instance.placed`` (commit). A crash anywhere leaves the call pending;
once its lease runs out it is taken again and first looks, by tag, for a node created on any
account it was sent to, so an instance is never launched twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

import asyncpg
import structlog

from services.scheduler import SOURCE, repository
from services.scheduler.catalogs import CatalogCache
from services.scheduler.cloud_calls import (
    CatalogRead,
    act_on_node,
    describe,
    find_launched,
    launch_node,
)
from services.scheduler.placement import (
    GrantedAccount,
    Offer,
    Request,
    eligible_accounts,
    explain,
    offer_for,
    rank,
    spread_accounts,
)
from services.scheduler.repository import CloudCall, InstancePlacement
from shared import tracing
from shared.clouds.connections import CloudConnections, CloudThrottled, connection_lost
from shared.containment import failing_alone
from shared.db import TRANSIENT_DB_ERRORS
from shared.events import InstanceFailed, InstancePlaced
from shared.metrics import LAUNCH_SECONDS, LAUNCHES, PLACEMENT_SECONDS
from shared.outbox import add_to_outbox
from shared.pricing import cheapest_fit
from shared.runtime import Clock

log = structlog.get_logger(__name__)
# An instance's reason stays readable; `attempts` in instance.failed keeps every cause whole.
MAX_REASON = 2000

POLL_SECONDS = 1.0
# Throttled everywhere: try again after this long (or the longest pause an account asked for).
THROTTLED_WAIT = 1.0
# A launch whose earlier node cannot be looked for (the cloud errs) waits this many tries
# before it launches anyway, rather than risk a second node.
LOOKUP_PATIENCE = 5


@dataclass
class AccountBook:
    """The scheduler's accounts in memory. Re-read after a change recorded here, and at most
    ``max_age`` seconds after one recorded by another replica."""

    pool: asyncpg.Pool
    max_age: float = 2.0
    clock: Callable[[], float] = time.monotonic
    _accounts: dict[str, GrantedAccount] | None = None
    _read_at: float = 0.0

    async def accounts(self) -> dict[str, GrantedAccount]:
        if self._accounts is None or self.clock() - self._read_at > self.max_age:
            self._accounts = {a.id: a for a in await repository.all_accounts(self.pool)}
            self._read_at = self.clock()
        return self._accounts

    def forget(self) -> None:
        self._accounts = None


def _max_instances(account: GrantedAccount) -> int | None:
    limit = account.config.get("max_instances")
    return limit if isinstance(limit, int) else None


@dataclass
class _Tally:
    """What a launch's tries came to: each account's cause for not launching it, and the
    accounts that throttled us (which may still take it later)."""

    attempts: list[str] = field(default_factory=list)
    throttled: list[str] = field(default_factory=list)


# What one try on an offer came to: the instance placed, its spread place lost to another
# member of its group (look again at what is left), or no launch there for another cause.
_Outcome = Literal["placed", "lost", "missed"]


def _offer(
    account: GrantedAccount,
    read: CatalogRead,
    request: Request,
    load: int,
    taken: frozenset[str] = frozenset(),
) -> Offer | str:
    """The account's offer at its current load, or the reason it has none (``taken``: the
    places other instances of a spread group hold)."""
    limit = _max_instances(account)
    headroom = limit - load if limit is not None else None
    return offer_for(
        account, read.catalog, request, load=load, headroom=headroom, taken_regions=taken
    )


def _failure_reason(eligible: list[GrantedAccount], attempts: list[str]) -> str:
    """Each tried account's cause, in the reason the owner reads on the instance."""
    if not eligible:
        reason = "no account granted to the owner matches the placement"
    elif attempts:
        reason = "no candidate account could launch it: " + "; ".join(attempts)
    else:
        reason = "no candidate account could launch it"
    return reason[:MAX_REASON]


@dataclass
class CloudWorker:
    pool: asyncpg.Pool
    clouds: CloudConnections
    catalogs: CatalogCache
    book: AccountBook
    clock: Clock
    concurrency: int = 64
    lease: float = 15.0
    on_commit: Callable[[], None] = lambda: None  # wakes the outbox relay
    _wake: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _in_flight: dict[int, asyncio.Task[None]] = field(default_factory=dict, init=False)
    _taken_at: dict[int, float] = field(default_factory=dict, init=False)  # monotonic, by call

    def wake(self) -> None:
        """Calls were recorded: take them now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        renewed = time.monotonic()
        try:
            while True:
                self._wake.clear()
                free = self.concurrency - len(self._in_flight)
                claimed: list[CloudCall] = []
                if free > 0:
                    try:
                        claimed = await repository.claim_calls(
                            self.pool,
                            now=self.clock(),
                            limit=free,
                            lease=timedelta(seconds=self.lease),
                        )
                    except TRANSIENT_DB_ERRORS as exc:
                        log.warning("cloud_calls_unreachable", error=repr(exc))
                for call in claimed:
                    task = asyncio.create_task(self._carry_out(call), name=f"cloud-call-{call.id}")
                    self._in_flight[call.id] = task
                    self._taken_at[call.id] = time.monotonic()
                    task.add_done_callback(functools.partial(self._done, call.id))
                if time.monotonic() - renewed > self.lease / 3:
                    renewed = time.monotonic()
                    with contextlib.suppress(*TRANSIENT_DB_ERRORS):
                        await repository.renew_leases(
                            self.pool,
                            list(self._in_flight),
                            self.clock() + timedelta(seconds=self.lease),
                        )
                if len(claimed) < free or free <= 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), POLL_SECONDS)
        finally:
            await self._finish_in_flight()

    def _done(self, call_id: int, _task: asyncio.Task[None]) -> None:
        self._in_flight.pop(call_id, None)
        self._taken_at.pop(call_id, None)
        self._wake.set()

    async def _finish_in_flight(self, grace: float = 5.0) -> None:
        """Stopping: let calls in progress finish; a call cut short is taken again later."""
        tasks = list(self._in_flight.values())
        if tasks:
            _, unfinished = await asyncio.wait(tasks, timeout=grace)
            for task in unfinished:
                task.cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)

    async def _carry_out(self, call: CloudCall) -> None:
        # An outcome not recorded: the lease runs out and the call is taken again, finding its
        # node by tag if the cloud had made it. In the trace of what asked for the call.
        with (
            tracing.continued(call.traceparent, f"cloud {call.action}"),
            structlog.contextvars.bound_contextvars(
                instance_id=str(call.instance_id), cloud_call=call.action, attempt=call.attempts
            ),
            failing_alone(
                log, not_recorded="cloud_call_not_recorded", crashed="cloud_call_crashed"
            ),
        ):
            if call.action == "launch":
                await self._launch(call)
            else:
                await self._act(call)

    # -- launches -------------------------------------------------------------------------

    async def _launch(self, call: CloudCall) -> None:
        request = call.launch
        accounts = await self.book.accounts()
        if call.tried and await self._adopt_earlier_node(call, accounts):
            return
        eligible = eligible_accounts(accounts.values(), request)
        tally = _Tally()
        if await self._launch_on_offers(call, accounts, eligible, tally):
            return
        if tally.throttled:
            # Some account could still take it once the cloud lets us: wait, do not fail.
            await self._wait_for_cloud(call, eligible, tally.throttled)
            return
        await self._launch_failed(call, _failure_reason(eligible, tally.attempts), tally.attempts)

    async def _launch_on_offers(
        self,
        call: CloudCall,
        accounts: dict[str, GrantedAccount],
        eligible: list[GrantedAccount],
        tally: _Tally,
    ) -> bool:
        """Try the offers, best first, until one takes the launch. True once the launch is
        settled: placed, or failed because its spread leaves no account; False when none took
        it, with every cause in ``tally``: each try's, then those of the accounts that had no
        offer at the last look."""
        tried: set[tuple[str, str | None]] = set()
        while True:
            # A spread launch that lost a place to another member of its group looks again at
            # the places taken and tries what is left (another region of the same account too).
            taken = await self._spread_taken(call)
            usable, spread_reason = spread_accounts(eligible, call.launch, taken)
            if spread_reason is not None:
                await self._launch_failed(call, spread_reason, tally.attempts or [spread_reason])
                return True
            offered = _Tally()
            offers, catalogs = await self._offers(call.launch, usable, offered, taken)
            outcome = await self._try_ranked(call, offers, catalogs, accounts, tried, tally)
            if outcome == "placed":
                return True
            if outcome == "missed":
                tally.attempts.extend(offered.attempts)
                tally.throttled.extend(offered.throttled)
                return False

    async def _try_ranked(
        self,
        call: CloudCall,
        offers: list[Offer],
        catalogs: dict[str, CatalogRead],
        accounts: dict[str, GrantedAccount],
        tried: set[tuple[str, str | None]],
        tally: _Tally,
    ) -> _Outcome:
        """Launch on each offer not ``tried`` yet, best first, until one places it or loses its
        spread place; the choices are numbered on from the earlier looks'."""
        ranked = [o for o in rank(offers) if (o.account.id, o.region) not in tried]
        before = len(tried)
        for n, offer in enumerate(ranked, 1):
            tried.add((offer.account.id, offer.region))
            reason = explain(offer, before + n, before + len(ranked))
            read = catalogs[offer.account.id]
            outcome = await self._launch_on(call, offer, read, accounts, reason, tally)
            if outcome != "missed":
                return outcome
        return "missed"

    async def _spread_taken(self, call: CloudCall) -> frozenset[str]:
        """The places other members of a spread launch's group hold (none if not spread)."""
        request = call.launch
        if not (request.spread and request.deployment_id and request.group):
            return frozenset()
        return await repository.spread_taken(
            self.pool, request.deployment_id, request.group, call.instance_id
        )

    async def _offers(
        self,
        request: Request,
        eligible: list[GrantedAccount],
        tally: _Tally,
        taken: frozenset[str] = frozenset(),
    ) -> tuple[list[Offer], dict[str, CatalogRead]]:
        """Each eligible account's offer, with the catalog it was read from; an account whose
        catalog cannot be read, or that has no offer, is noted in ``tally``."""
        loads = await repository.loads(self.pool, [a.id for a in eligible])
        offers: list[Offer] = []
        catalogs: dict[str, CatalogRead] = {}
        for account in eligible:
            try:
                catalogs[account.id] = await self.catalogs.get(account)
            except CloudThrottled as error:
                tally.throttled.append(f"{account.name}: {error}")
                continue
            except Exception as error:
                tally.attempts.append(f"{account.name}: {describe(error)}")
                continue
            offer = _offer(account, catalogs[account.id], request, loads.get(account.id, 0), taken)
            if isinstance(offer, str):
                tally.attempts.append(offer)
            else:
                offers.append(offer)
        return offers, catalogs

    async def _launch_on(
        self,
        call: CloudCall,
        offer: Offer,
        read: CatalogRead,
        accounts: dict[str, GrantedAccount],
        reason: str,
        tally: _Tally,
    ) -> _Outcome:
        """Reserve room on the offer's account and create the node there: ``placed`` once the
        instance is (by this create, or by one an earlier take had sent), ``lost`` when its
        spread place was taken meanwhile, ``missed`` for any other cause (noted in ``tally``)."""
        account = offer.account
        place = call.launch.spread_place(account.id, offer.region)
        refused = await repository.reserve(
            self.pool, call, account.id, _max_instances(account), place
        )
        if refused == repository.PLACE_TAKEN:
            where = account.name if call.launch.spread == "accounts" else place
            tally.attempts.append(
                f"{account.name}: {where} taken meanwhile by another instance of group "
                f"{call.launch.group!r} (spread across {call.launch.spread})"
            )
            return "lost"
        if refused is not None:
            tally.attempts.append(f"{account.name}: {refused}")
            return "missed"
        try:
            node = await self.clouds.call(
                account,
                functools.partial(
                    launch_node,
                    read=read,
                    offer=offer,
                    instance_id=call.instance_id,
                    name=f"boreas-{str(call.instance_id)[:8]}",
                    extra_metadata=account.config.get("metadata"),
                ),
            )
        except CloudThrottled as error:
            await repository.release(self.pool, call, account.id)
            tally.throttled.append(f"{account.name}: {error}")
            return "missed"
        except Exception as error:
            lost = connection_lost(error)
            if lost and await self._adopt_earlier_node(call, accounts, (account.id,)):
                return "placed"  # the create had gone through after all
            await repository.release(self.pool, call, account.id)
            self.catalogs.forget(account.id)
            tally.attempts.append(f"{account.name}: {describe(error)}")
            log.warning("launch_attempt_failed", account=account.name, error=describe(error))
            return "missed"
        await self._placed(
            call, account, str(node.id), offer.region, reason, offer.size.price_per_hour
        )
        return "placed"

    async def _wait_for_cloud(
        self, call: CloudCall, accounts: list[GrantedAccount], throttled: list[str]
    ) -> None:
        """Take the launch again once every throttling account's pause is over."""
        wait = max([THROTTLED_WAIT] + [self.clouds.budget(a).pause for a in accounts])
        await repository.postpone(self.pool, call.id, self.clock() + timedelta(seconds=wait))
        log.info("launch_waiting_for_cloud", throttled=throttled, retry_in=round(wait, 1))
        self._measure_take(call, "waiting")
        self.wake()

    async def _launch_failed(self, call: CloudCall, reason: str, attempts: list[str]) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await repository.record(conn, InstancePlacement(call.instance_id, call.owner, "failed"))
            await repository.finish_call(conn, call.id, "failed")
            await repository.end_lease(conn, call.instance_id, call.owner)
            await add_to_outbox(
                conn,
                InstanceFailed(
                    instance_id=call.instance_id, owner=call.owner, reason=reason, attempts=attempts
                ),
                source=SOURCE,
            )
        self.on_commit()
        self._count_launch(call, "failed")
        log.info("launch_failed", reason=reason, attempts=attempts)

    async def _adopt_earlier_node(
        self,
        call: CloudCall,
        accounts: dict[str, GrantedAccount],
        sent_to: tuple[str, ...] | None = None,
    ) -> bool:
        """Creates were sent for this call to ``sent_to`` (by default every account an earlier
        take tried) without an answer: a node may exist there."""
        for account_id in call.tried if sent_to is None else sent_to:
            account = accounts.get(account_id)
            if account is None:
                continue
            try:
                node = await self.clouds.call(
                    account, lambda driver: find_launched(driver, call.instance_id), read_only=True
                )
            except Exception as error:
                if call.attempts < LOOKUP_PATIENCE:
                    wait = THROTTLED_WAIT * call.attempts
                    await repository.postpone(
                        self.pool, call.id, self.clock() + timedelta(seconds=wait)
                    )
                    log.warning("earlier_node_lookup_failed", error=describe(error))
                    return True
                log.error("earlier_node_lookup_gave_up", error=describe(error))
                continue
            if node is not None:
                async with self.pool.acquire() as conn, conn.transaction():
                    await repository.adopt(conn, call, account.id)
                await self._placed(
                    call,
                    account,
                    str(node.id),
                    node.extra.get("region") or call.launch.region,
                    f"found {node.id} on {account.name}, created by an earlier attempt",
                    self._price_on(account, call.launch),
                )
                log.info("earlier_node_adopted", account=account.name, node=str(node.id))
                return True
        return False

    def _price_on(self, account: GrantedAccount, request: Request) -> float | None:
        """What the launch costs on ``account``: the size placement takes there, from the
        catalog in memory (None if not read here, or no size fits)."""
        read = self.catalogs.cached(account)
        size = (
            None
            if read is None
            else cheapest_fit(read.catalog.sizes, request.cpus, request.memory_mb)
        )
        return None if size is None else size.price_per_hour

    async def _placed(
        self,
        call: CloudCall,
        account: GrantedAccount,
        provider_instance_id: str,
        region: str | None,
        reason: str,
        price_per_hour: float | None,
    ) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await repository.record_placed(conn, call, account.id, provider_instance_id)
            await add_to_outbox(
                conn,
                InstancePlaced(
                    instance_id=call.instance_id,
                    owner=call.owner,
                    account_id=account.id,
                    provider=account.provider,
                    provider_instance_id=provider_instance_id,
                    region=region,
                    reason=reason,
                    cpus=call.launch.cpus,
                    memory_mb=call.launch.memory_mb,
                    price_per_hour=price_per_hour,
                ),
                source=SOURCE,
            )
        self.on_commit()
        log.info(
            "launch_placed",
            account=account.name,
            provider_instance_id=provider_instance_id,
            region=region,
            price_per_hour=price_per_hour,
        )
        self._count_launch(call, "placed")

    def _measure_take(self, call: CloudCall, outcome: str) -> None:
        taken = self._taken_at.get(call.id)
        if taken is not None:
            PLACEMENT_SECONDS.labels(outcome).observe(time.monotonic() - taken)

    def _count_launch(self, call: CloudCall, outcome: str) -> None:
        """A launch's outcome is recorded: count it, with this take's length and the whole
        launch's since the scheduler recorded it (the database's clock against ours)."""
        LAUNCHES.labels(outcome).inc()
        self._measure_take(call, outcome)
        if call.created_at is not None:
            waited = datetime.now(UTC) - call.created_at
            LAUNCH_SECONDS.labels(outcome).observe(max(0.0, waited.total_seconds()))

    # -- actions --------------------------------------------------------------------------

    async def _act(self, call: CloudCall) -> None:
        placement = await repository.current_placement(self.pool, call.instance_id)
        if placement is None or placement.status != "placed":
            # Never placed (failed or cancelled): nothing on any cloud to act on.
            await repository.finish_call(self.pool, call.id, "done")
            return
        account = (await self.book.accounts()).get(placement.account_id or "")
        if account is None:
            log.error("action_on_unknown_account", account_id=placement.account_id)
            await repository.finish_call(self.pool, call.id, "failed")
            return
        node_id = placement.provider_instance_id or ""
        try:
            await self.clouds.call(
                account, lambda driver: act_on_node(driver, node_id, call.action)
            )
        except CloudThrottled as error:
            wait = max(THROTTLED_WAIT, self.clouds.budget(account).pause)
            await repository.postpone(self.pool, call.id, self.clock() + timedelta(seconds=wait))
            log.info("action_waiting_for_cloud", error=str(error), retry_in=round(wait, 1))
            self.wake()
            return
        except Exception as error:
            # The poller reports what really happened; a refused action is logged, not retried
            # for ever (e.g. stopping a node that has just died).
            log.warning("action_refused_by_cloud", action=call.action, error=describe(error))
        await repository.finish_call(self.pool, call.id, "done")
