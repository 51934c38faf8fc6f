"""Budgets, prices, leases and approvals in the quota service, on the real RabbitMQ and
PostgreSQL: no race admits past a budget (two replicas), an approval admits a held launch once
and a denial releases it, and the ledger follows placements, spells, leases and the month.

Only quota runs: the test publishes what the gateway, the scheduler and the poller would. Its
clock is the test's (``shared.runtime.Clock``), so the figures are exact and hand-computed.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

from services.quota import bootstrap as quota
from services.quota.budget import figure, money, projection, shown
from services.quota.reconcile import reconcile_once
from shared.config import QuotaSettings
from shared.events import (
    Event,
    InstanceApproved,
    InstanceDenied,
    InstanceLaunchRequested,
    InstanceLeaseExtended,
    InstancePlaced,
    InstanceState,
    InstanceStateChanged,
    Lease,
    QuotaLimitsSet,
    ResourceLimits,
)
from shared.ordering import slot_of
from shared.runtime import ServiceRuntime
from shared.testing import EventProbe, wait_until
from tests.integration.publishing import connected_bus
from tests.integration.support import settings_for

MID_NOVEMBER = datetime(2026, 11, 15, tzinfo=UTC)  # 384 h to the month's end


class MovableClock:
    """The quota replicas' clock: still until the test moves it."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def quota_at(amqp_url: str, database_url: str, clock: Callable[[], datetime]) -> ServiceRuntime:
    return quota.build(settings_for(amqp_url, database_url, QuotaSettings), clock=clock)


@asynccontextmanager
async def publisher(amqp_url: str) -> AsyncIterator[Callable[..., object]]:
    async with connected_bus(amqp_url, "boreas/gateway") as bus:

        async def publish(*events: Event) -> None:
            await asyncio.gather(*(bus.publish(e) for e in events))

        yield publish


def launch(
    owner: str,
    price: float | None,
    *,
    cpus: int = 1,
    memory_mb: int = 512,
    lease_end: datetime | None = None,
    rules: tuple[str, ...] = (),
    instance_id: uuid.UUID | None = None,
) -> InstanceLaunchRequested:
    return InstanceLaunchRequested(
        instance_id=instance_id or uuid.uuid4(),
        owner=owner,
        name="vm",
        image="debian-12",
        cpus=cpus,
        memory_mb=memory_mb,
        price_per_hour=price,
        lease=Lease(expires_at=lease_end, on_expiry="stop", warn_seconds=60) if lease_end else None,
        approval_rules=list(rules),
        approval_deadline=MID_NOVEMBER + timedelta(days=1) if rules else None,
    )


def owner_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def set_budget(publish: Callable[..., object], probe: EventProbe, owner: str, budget: float):
    await publish(  # type: ignore[misc]
        QuotaLimitsSet(owner=owner, limits=ResourceLimits(cost_per_month=budget), set_by="test")
    )
    await probe.wait_for(
        "quota.usage_changed",
        lambda e: e.data["owner"] == owner and e.data["limits"]["cost_per_month"] == budget,
        timeout=10,
    )


def decisions(probe: EventProbe, ids: set[str]) -> tuple[dict, dict]:
    """The admitted and rejected among ``ids``, one envelope each (by instance id)."""
    admitted = {
        e.subject: e for e in probe.matching("instance.launch_admitted") if e.subject in ids
    }
    rejected = {e.subject: e for e in probe.matching("instance.rejected") if e.subject in ids}
    return admitted, rejected


async def all_decided(probe: EventProbe, ids: set[str]) -> tuple[dict, dict]:
    await wait_until(
        lambda: sum(map(len, decisions(probe, ids))) == len(ids),
        timeout=60,
        what=f"each of {len(ids)} launches decided",
    )
    return decisions(probe, ids)


def last_usage(probe: EventProbe, owner: str) -> dict:
    return probe.matching("quota.usage_changed", lambda e: e.data["owner"] == owner)[-1].data


async def usage_shows(probe: EventProbe, owner: str, **expected: object) -> dict:
    """Wait for a ``quota.usage_changed`` of ``owner`` whose usage has ``expected``."""

    def shows(e) -> bool:  # type: ignore[no-untyped-def]
        usage = e.data["usage"]
        return e.data["owner"] == owner and all(usage[k] == v for k, v in expected.items())

    [found] = await probe.wait_for("quota.usage_changed", shows, timeout=15)
    return found.data


async def test_two_hundred_racing_launches_admit_exactly_what_the_budget_fits(
    amqp_url: str, database_url: str, probe: EventProbe
) -> None:
    owner = owner_name("budget")
    clock = MovableClock(MID_NOVEMBER)
    async with (
        quota_at(amqp_url, database_url, clock),
        quota_at(amqp_url, database_url, clock),  # two replicas compete on the same queues
        publisher(amqp_url) as publish,
    ):
        # 384 h to the month's end at 0.25/h: 96 each; 480 fits exactly 5.
        await set_budget(publish, probe, owner, 480.0)
        asked = [launch(owner, 0.25) for _ in range(200)]
        await publish(*asked)
        admitted, rejected = await all_decided(probe, {str(a.instance_id) for a in asked})
        assert (len(admitted), len(rejected)) == (5, 195)
        assert all(
            e.data["reason"].startswith(
                "cost_per_month budget 480.00 would be passed: 480.00 spent or committed this "
                "month, this launch would add 96.00 (0.25/h until 2026-12-01 00:00 UTC)"
            )
            for e in rejected.values()
        ), {e.data["reason"] for e in rejected.values()}
        shown_usage = await usage_shows(probe, owner, instances=5)
        assert shown_usage["usage"]["cost_this_month"] == 480.0
        assert shown_usage["limits"]["cost_per_month"] == 480.0


async def test_mixed_sizes_and_prices_never_pass_the_budget_by_a_cent(
    amqp_url: str, database_url: str, probe: EventProbe
) -> None:
    owner = owner_name("mixed")
    clock = MovableClock(MID_NOVEMBER + timedelta(hours=7, minutes=13, seconds=29))
    budget = 151.37
    pick = random.Random(14)
    prices = [0.0116, 0.0416, 0.096, 0.192, 0.384, 1.536]
    leases = [None, timedelta(hours=1), timedelta(hours=30, minutes=7), timedelta(days=40)]
    asked = []
    for _ in range(200):
        lease = pick.choice(leases)
        asked.append(
            launch(
                owner,
                pick.choice(prices),
                cpus=pick.choice([1, 2, 4, 8]),
                memory_mb=pick.choice([512, 2048, 8192]),
                lease_end=clock.now + lease if lease else None,
            )
        )
    async with (
        quota_at(amqp_url, database_url, clock),
        quota_at(amqp_url, database_url, clock),
        publisher(amqp_url) as publish,
    ):
        await set_budget(publish, probe, owner, budget)
        await publish(*asked)
        admitted, rejected = await all_decided(probe, {str(a.instance_id) for a in asked})

        def cost(a: InstanceLaunchRequested) -> Fraction:
            return projection(
                money(a.price_per_hour), a.lease.expires_at if a.lease else None, clock.now
            )

        total = sum((cost(a) for a in asked if str(a.instance_id) in admitted), Fraction(0))
        room = Fraction(money(budget)) - total  # type: ignore[arg-type]
        assert room >= 0, f"admitted {figure(total)} against a budget of {budget}"
        # Tight too: every launch refused would have passed the budget even at the end.
        refused = [a for a in asked if str(a.instance_id) in rejected]
        assert refused and all(cost(a) > room for a in refused)
        assert 0 < len(admitted) < 200
        reported = await usage_shows(probe, owner, instances=len(admitted))
        assert Decimal(str(reported["usage"]["cost_this_month"])) == shown(total)


def same_partition_as(instance_id: uuid.UUID) -> uuid.UUID:
    """Another instance id whose events an instance-ordered queue keeps behind
    ``instance_id``'s (the same slot): once its decision is out, the earlier ones were made."""
    while True:
        other = uuid.uuid4()
        if slot_of(str(other)) == slot_of(str(instance_id)):
            return other


def approved(instance_id: uuid.UUID, owner: str) -> InstanceApproved:
    return InstanceApproved(
        instance_id=instance_id, owner=owner, decided_by="admin", decided_at=MID_NOVEMBER
    )


async def test_an_approval_admits_a_held_launch_once_and_a_denial_releases_one(
    amqp_url: str, database_url: str, probe: EventProbe
) -> None:
    owner = owner_name("held")
    clock = MovableClock(MID_NOVEMBER)
    async with (
        quota_at(amqp_url, database_url, clock) as runtime,
        publisher(amqp_url) as publish,
    ):
        await set_budget(publish, probe, owner, 200.0)
        held = launch(owner, 0.25, cpus=16, rules=("big",))
        await publish(held)
        [asked] = await probe.wait_for(
            "instance.approval_requested", lambda e: e.subject == str(held.instance_id)
        )
        assert asked.data["rules"] == ["big"]
        assert asked.data["price_per_hour"] == 0.25
        assert asked.data["deadline"].startswith("2026-11-16T00:00:00")
        await usage_shows(probe, owner, instances=1, cpus=16, cost_this_month=96.0)
        # The room is reserved: a second launch of 96 passes the budget of 200 no more than
        # it would if the first had been admitted.
        second = launch(
            owner, 0.25, rules=("big",), instance_id=same_partition_as(held.instance_id)
        )
        third = launch(owner, 0.25)
        await publish(second)
        await probe.wait_for(
            "instance.approval_requested", lambda e: e.subject == str(second.instance_id)
        )
        await publish(third)
        [refused] = await probe.wait_for(
            "instance.rejected", lambda e: e.subject == str(third.instance_id)
        )
        assert refused.data["reason"].startswith("cost_per_month budget 200.00 would be passed")
        assert not probe.matching(
            "instance.launch_admitted", lambda e: e.subject == str(held.instance_id)
        )

        # Approved, twice (a redelivery): admitted once, as it was asked for.
        await publish(approved(held.instance_id, owner))
        await publish(approved(held.instance_id, owner))
        marker = launch(owner, 0.0, instance_id=same_partition_as(held.instance_id), rules=("x",))
        await publish(marker)
        await probe.wait_for(
            "instance.approval_requested", lambda e: e.subject == str(marker.instance_id)
        )
        await publish(approved(marker.instance_id, owner))
        await probe.wait_for(
            "instance.launch_admitted", lambda e: e.subject == str(marker.instance_id)
        )
        admissions = probe.matching(
            "instance.launch_admitted", lambda e: e.subject == str(held.instance_id)
        )
        assert len(admissions) == 1
        assert admissions[0].data["cpus"] == 16 and admissions[0].data["approval_rules"] == ["big"]
        assert admissions[0].data["price_per_hour"] == 0.25

        # Denied: its reservation goes, and usage says so.
        denial = InstanceDenied(
            instance_id=second.instance_id,
            owner=owner,
            decided_by="admin",
            decided_at=MID_NOVEMBER,
            reason="denied by admin: too big",
        )
        await publish(denial)
        await usage_shows(probe, owner, instances=2, cpus=17, cost_this_month=96.0)
        entry = await runtime.pool.fetchrow(
            "SELECT status, awaiting_approval, launch FROM ledger WHERE instance_id = $1",
            second.instance_id,
        )
        assert (entry["status"], entry["awaiting_approval"], entry["launch"]) == (
            "released",
            False,
            None,
        )
        # A denial of an approved launch (or denied already) changes nothing.
        await publish(
            denial, InstanceDenied(**{**denial.model_dump(), "instance_id": held.instance_id})
        )
        await publish(approved(second.instance_id, owner))
        # Fences, in the same slot as both: a launch held, then denied (behind the denials in
        # their queue) and one approved (behind the approval).
        late, fence = same_partition_as(held.instance_id), same_partition_as(held.instance_id)
        await publish(launch(owner, 0.0, instance_id=late, rules=("x",)))
        await publish(launch(owner, 0.0, instance_id=fence, rules=("x",)))
        await usage_shows(probe, owner, instances=4, cpus=19)
        await publish(
            InstanceDenied(**{**denial.model_dump(), "instance_id": late}),
            approved(fence, owner),
        )
        await probe.wait_for("instance.launch_admitted", lambda e: e.subject == str(fence))
        await usage_shows(probe, owner, instances=3, cpus=18)
        held_now = await runtime.pool.fetchval(
            "SELECT status FROM ledger WHERE instance_id = $1", held.instance_id
        )
        assert held_now == "reserved"
        assert not probe.matching(
            "instance.launch_admitted", lambda e: e.subject == str(second.instance_id)
        )


def state(
    instance_id: uuid.UUID, owner: str, old: InstanceState | None, new: InstanceState, at: datetime
) -> InstanceStateChanged:
    return InstanceStateChanged(
        instance_id=instance_id,
        owner=owner,
        account_id="acct",
        provider="simulator",
        provider_instance_id="sim-1",
        old_state=old,
        new_state=new,
        cpus=1,
        memory_mb=512,
        observed_at=at,
    )


async def test_placement_spells_leases_and_the_month_move_the_cost(
    amqp_url: str, database_url: str, probe: EventProbe
) -> None:
    owner = owner_name("spend")
    clock = MovableClock(datetime(2026, 11, 30, 20, tzinfo=UTC))
    async with (
        quota_at(amqp_url, database_url, clock) as runtime,
        publisher(amqp_url) as publish,
    ):
        first = launch(owner, 0.5)
        await publish(first)
        # Admitted at 0.5/h, 4 h to the month's end.
        await usage_shows(probe, owner, instances=1, cost_this_month=2.0)
        await publish(
            InstancePlaced(
                instance_id=first.instance_id,
                owner=owner,
                account_id="acct",
                provider="simulator",
                provider_instance_id="sim-1",
                cpus=1,
                memory_mb=512,
                price_per_hour=0.25,
            )
        )
        # Placed at 0.25/h: the difference is released.
        await usage_shows(probe, owner, instances=1, cost_this_month=1.0)
        running = state(
            first.instance_id, owner, InstanceState.PENDING, InstanceState.RUNNING, clock.now
        )
        await publish(state(first.instance_id, owner, None, InstanceState.PENDING, clock.now))
        await publish(running)
        await publish(running)  # delivered again: still one spell
        await wait_until(
            lambda: runtime.pool.fetchval(
                "SELECT count(*) FROM spells WHERE instance_id = $1", first.instance_id
            ),
            timeout=10,
            what="the spell recorded",
        )

        # Past midnight on the 1st: 3 h of December spent, the rest of it committed.
        clock.now = datetime(2026, 12, 1, 3, tzinfo=UTC)
        await reconcile_once(runtime.pool, clock=clock)
        # 3 h + 741 h at 0.25/h
        await usage_shows(probe, owner, instances=1, cost_this_month=186.0)

        leased = launch(owner, 1.0, lease_end=datetime(2026, 12, 1, 5, tzinfo=UTC))
        await publish(leased)
        await usage_shows(probe, owner, instances=2, cost_this_month=188.0)  # + 2 h at 1/h
        extension = InstanceLeaseExtended(
            instance_id=leased.instance_id,
            owner=owner,
            expires_at=datetime(2026, 12, 1, 9, tzinfo=UTC),
            extended_by=owner,
        )
        await publish(extension)
        await usage_shows(probe, owner, instances=2, cost_this_month=192.0)  # + 4 h more
        # An older extension delivered late moves nothing back.
        await publish(
            InstanceLeaseExtended(
                **{**extension.model_dump(), "expires_at": datetime(2026, 12, 1, 7, tzinfo=UTC)}
            )
        )

        # Terminated at 04:00: 4 h of December at 0.25/h spent, nothing committed; the leased
        # one commits 5 h at 1/h.
        clock.now = datetime(2026, 12, 1, 4, tzinfo=UTC)
        await publish(
            state(
                first.instance_id, owner, InstanceState.RUNNING, InstanceState.TERMINATED, clock.now
            )
        )
        await usage_shows(probe, owner, instances=1, cost_this_month=6.0)
        spells = await runtime.pool.fetch(
            "SELECT started_at, ended_at FROM spells WHERE instance_id = $1", first.instance_id
        )
        assert [(s["started_at"], s["ended_at"]) for s in spells] == [
            (datetime(2026, 11, 30, 20, tzinfo=UTC), datetime(2026, 12, 1, 4, tzinfo=UTC))
        ]
        expires = await runtime.pool.fetchval(
            "SELECT expires_at FROM ledger WHERE instance_id = $1", leased.instance_id
        )
        assert expires == datetime(2026, 12, 1, 9, tzinfo=UTC)


async def test_the_reconcile_loop_reports_the_new_month_on_its_own(
    amqp_url: str, database_url: str, probe: EventProbe
) -> None:
    owner = owner_name("rollover")
    clock = MovableClock(datetime(2026, 11, 30, 23, tzinfo=UTC))
    settings = settings_for(amqp_url, database_url, QuotaSettings, quota_reconcile_interval=0.2)
    async with quota.build(settings, clock=clock), publisher(amqp_url) as publish:
        await publish(launch(owner, 0.5))
        await usage_shows(probe, owner, instances=1, cost_this_month=0.5)  # 1 h to midnight
        clock.now = datetime(2026, 12, 1, 0, 30, tzinfo=UTC)
        # Reserved and never run: December commits 743.5 h at 0.5/h.
        await usage_shows(probe, owner, instances=1, cost_this_month=371.75)
