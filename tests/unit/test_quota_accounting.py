"""Quota arithmetic: limits, and Hypothesis state machines that check the invariants the quota
service relies on: one over reserve, place, release and redelivery; one over budgets, with
prices, leases, spells and month rollover on an injected clock."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from types import SimpleNamespace

import hypothesis.strategies as st
from hypothesis import given, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from services.quota import following
from services.quota.accounting import (
    HOLDS,
    RESOURCES,
    Amounts,
    Ask,
    Entry,
    Limits,
    Status,
    after_end,
    after_placement,
    costs_after,
    decide,
    limit_of,
    one_instance,
    refusal,
    usage_delta,
)
from services.quota.budget import Costed, Seen, Spell, cost_this_month, follow_spells, month_of


def test_a_launch_that_fits_is_admitted() -> None:
    assert refusal(Amounts(4, 8, 8192), Limits(5, 16, 16384), one_instance(2, 2048)) is None


def test_each_limit_refuses_with_its_reason() -> None:
    usage = Amounts(5, 8, 8192)
    assert refusal(usage, Limits(instances=5), one_instance(1, 512)) == (
        "instances limit 5 reached: 5 in use or reserved, this launch needs 1 more"
    )
    assert "cpus limit 9" in refusal(usage, Limits(cpus=9), one_instance(2, 512))
    assert "memory_mb limit 8192" in refusal(usage, Limits(memory_mb=8192), one_instance(1, 1))


def test_no_limits_means_unlimited() -> None:
    assert refusal(Amounts(10**6, 10**6, 10**9), Limits(), one_instance(64, 10**6)) is None


def test_a_lowered_limit_blocks_new_launches_and_kills_nothing() -> None:
    usage = Amounts(8, 8, 8192)
    assert refusal(usage, Limits(instances=3), one_instance(1, 1)) is not None
    assert after_end(Status.ACTIVE) is Status.RELEASED  # only ends release


class QuotaLedger(RuleBasedStateMachine):
    """The quota service's rules, driven by events in any order, some of them twice."""

    def __init__(self) -> None:
        super().__init__()
        self.limits = Limits(instances=4, cpus=8, memory_mb=8192)
        self.usage = Amounts()
        self.ledger: dict[int, tuple[Status | None, Amounts]] = {}
        self.next_id = 0

    def _move(self, instance: int, new: Status) -> None:
        old, amounts = self.ledger[instance]
        self.usage = self.usage + usage_delta(old, new, amounts)
        self.ledger[instance] = (new, amounts)

    @rule(cpus=st.integers(1, 4), memory=st.integers(1, 4096))
    def launch(self, cpus: int, memory: int) -> None:
        amounts = one_instance(cpus, memory)
        instance, self.next_id = self.next_id, self.next_id + 1
        self.ledger[instance] = (None, amounts)
        admitted = refusal(self.usage, self.limits, amounts) is None
        self._move(instance, Status.RESERVED if admitted else Status.REJECTED)

    def _follow(self, data: st.DataObject, after: Callable[[Status | None], Status | None]) -> None:
        """An event about one of the instances, ``after`` saying where it moves the instance (or
        that it does not); drawing the same instance again is a redelivery."""
        instance = data.draw(st.sampled_from(sorted(self.ledger)))
        new = after(self.ledger[instance][0])
        if new is not None:
            self._move(instance, new)

    @precondition(lambda self: self.ledger)
    @rule(data=st.data())
    def placed(self, data: st.DataObject) -> None:
        self._follow(data, after_placement)

    @precondition(lambda self: self.ledger)
    @rule(data=st.data())
    def ended(self, data: st.DataObject) -> None:
        """Failure or termination."""
        self._follow(data, after_end)

    @precondition(lambda self: self.ledger)
    @rule(data=st.data())
    def lower_the_limit(self, data: st.DataObject) -> None:
        self.limits = Limits(instances=data.draw(st.integers(0, 4)), cpus=8, memory_mb=8192)

    @invariant()
    def usage_is_never_negative(self) -> None:
        assert min(self.usage.instances, self.usage.cpus, self.usage.memory_mb) >= 0

    @invariant()
    def usage_equals_the_live_instances(self) -> None:
        live = [a for status, a in self.ledger.values() if status in HOLDS]
        assert self.usage == sum(live, Amounts())

    @invariant()
    def usage_never_exceeds_the_limits_it_was_admitted_under(self) -> None:
        assert self.usage.cpus <= 8 and self.usage.memory_mb <= 8192
        assert self.usage.instances <= 4


TestQuotaLedger = QuotaLedger.TestCase
TestQuotaLedger.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)


def test_a_batch_is_decided_in_order_each_ask_seeing_those_admitted_before_it() -> None:
    asks = [Ask(f"i{n}", "alice", one_instance(2, 1024)) for n in range(4)]
    refusals, after = decide(asks, {"alice": Amounts(1, 2, 1024)}, {"alice": Limits(instances=3)})
    assert [r is None for r in refusals] == [True, True, False, False]
    assert after["alice"] == Amounts(3, 6, 3072)


def test_owners_in_one_batch_do_not_share_limits() -> None:
    asks = [Ask("a", "alice", one_instance(1, 1)), Ask("b", "bob", one_instance(1, 1))]
    refusals, after = decide(asks, {}, {"alice": Limits(instances=0)})
    assert refusals[0] is not None and refusals[1] is None
    assert after == {"bob": Amounts(1, 1, 1)}


@given(
    st.lists(
        st.tuples(st.sampled_from(["alice", "bob"]), st.integers(1, 8), st.integers(1, 4096)),
        max_size=40,
    ),
    st.integers(0, 10),
    st.integers(0, 40),
)
def test_no_batch_admits_past_a_limit(
    wanted: list[tuple[str, int, int]], max_instances: int, max_cpus: int
) -> None:
    asks = [Ask(str(n), o, one_instance(c, m)) for n, (o, c, m) in enumerate(wanted)]
    limits = {o: Limits(instances=max_instances, cpus=max_cpus) for o in ("alice", "bob")}
    refusals, after = decide(asks, {}, limits)
    for owner, held in after.items():
        assert held.instances <= max_instances and held.cpus <= max_cpus
        admitted = [
            a for a, r in zip(asks, refusals, strict=True) if r is None and a.owner == owner
        ]
        assert held == sum((a.amounts for a in admitted), Amounts())


# -- budgets: prices, leases, spells and the month -------------------------------------------

PRICES = [None, Decimal("0.0116"), Decimal("0.0416"), Decimal("0.25"), Decimal("1.5")]
LEASES = [None, timedelta(minutes=30), timedelta(hours=30), timedelta(days=40)]
OWNER = "alice"


@dataclass
class Held:
    """An instance in the model: its ledger entry and the spells it ran."""

    entry: Entry
    spells: tuple[Spell, ...] = ()

    @property
    def running(self) -> bool:
        return bool(self.spells) and self.spells[-1].ended_at is None

    def costed(self) -> Costed:
        e = self.entry
        return Costed(e.price, e.holds, e.expires_at, self.spells)


class QuotaBudget(RuleBasedStateMachine):
    """The budget, driven by launches of mixed sizes and prices (some unknown), leases,
    placements at a lower price, running and stopped spells, redeliveries and time passing over
    month ends (an injected clock). Never a cent over: a launch is admitted only if the owner's
    cost this month stays within the budget, and the cost only rises past the budget through what
    no budget decides (a new month, a lease extended, the budget lowered)."""

    def __init__(self) -> None:
        super().__init__()
        self.now = datetime(2026, 11, 29, 21, 17, tzinfo=UTC)
        self.budget = Decimal("25")
        self.limits = Limits(instances=6, cpus=16, cost_per_month=self.budget)
        self.usage = Amounts()
        self.held: dict[uuid.UUID, Held] = {}
        self.ceiling = Fraction(self.budget)

    def cost(self) -> Fraction:
        return cost_this_month([h.costed() for h in self.held.values()], self.now)

    def _unbudgeted(self) -> None:
        """Something no budget decides happened: the cost may be above the budget from now."""
        self.ceiling = max(Fraction(self.budget), self.cost())

    def _pick(self, data: st.DataObject, wanted: Callable[[Held], bool]) -> Held | None:
        keys = sorted(k for k, h in self.held.items() if wanted(h))
        return self.held[data.draw(st.sampled_from(keys))] if keys else None

    def _set(self, held: Held, entry: Entry | None = None, spells: Sequence[Spell] = ()) -> None:
        old = held.entry
        new = entry or old
        self.usage = self.usage + usage_delta(old.status, new.status, old.amounts)
        known = {s.started_at: s for s in held.spells}
        known.update({s.started_at: s for s in spells})
        self.held[old.instance_id] = Held(new, tuple(sorted(known.values(), key=_start)))

    @rule(
        wanted=st.lists(
            st.tuples(
                st.integers(1, 8),
                st.sampled_from(PRICES),
                st.sampled_from(LEASES),
            ),
            min_size=1,
            max_size=4,
        )
    )
    def launch(self, wanted: list[tuple[int, Decimal | None, timedelta | None]]) -> None:
        """A batch of launches, decided in order."""
        before = self.cost()
        asks = [
            Ask(str(n), OWNER, one_instance(cpus, 512), price, self.now + lease if lease else None)
            for n, (cpus, price, lease) in enumerate(wanted)
        ]
        refusals, after = decide(
            asks, {OWNER: self.usage}, {OWNER: self.limits}, costs={OWNER: before}, now=self.now
        )
        for ask, reason in zip(asks, refusals, strict=True):
            entry = Entry(
                uuid.UUID(int=len(self.held) + 1),  # in order: the draws repeat
                OWNER,
                ask.amounts,
                Status.REJECTED if reason else Status.RESERVED,
                ask.price,
                ask.expires_at,
            )
            self.held[entry.instance_id] = Held(entry)
            if reason is None:
                assert ask.price is not None  # an unknown price never passes a budget
            else:
                assert limit_of(reason) in {*RESOURCES, "cost_per_month"}
        self.usage = after[OWNER]
        expected = costs_after(asks, refusals, {OWNER: before}, self.now)[OWNER]
        # What the decision counted is what the ledger now says.
        assert self.cost() == expected
        if any(r is None for r in refusals):
            assert expected <= Fraction(self.budget), "admitted past the budget"

    @rule(data=st.data(), share=st.sampled_from([Fraction(1), Fraction(1, 2), Fraction(0)]))
    def placed(self, data: st.DataObject, share: Fraction) -> None:
        """Placed at the admitted price or lower (the scheduler offers no dearer size); a
        redelivery of an earlier placement changes nothing."""
        held = self._pick(data, lambda h: h.entry.status in HOLDS and not h.entry.awaiting)
        if held is None or held.entry.price is None:
            return
        price = held.entry.price * Decimal(share.numerator) / Decimal(share.denominator)
        event = SimpleNamespace(price_per_hour=float(price))
        moved = following.placed(held.entry, event)  # type: ignore[arg-type]
        if held.entry.status is Status.ACTIVE and price == held.entry.price:
            assert moved is None  # delivered again
        if moved is not None:
            self._set(held, moved)

    @rule(data=st.data())
    def starts_running(self, data: st.DataObject) -> None:
        """Seen running (never after its lease expired: the gateway refuses that start)."""
        held = self._pick(
            data,
            lambda h: (
                h.entry.status is Status.ACTIVE
                and not h.running
                and (h.entry.expires_at is None or h.entry.expires_at > self.now)
            ),
        )
        if held is not None:
            last = held.spells[-1] if held.spells else None
            self._set(held, spells=follow_spells(last, [Seen(True, self.now)]))

    @rule(data=st.data())
    def stops(self, data: st.DataObject) -> None:
        held = self._pick(data, lambda h: h.running)
        if held is not None:
            self._set(held, spells=follow_spells(held.spells[-1], [Seen(False, self.now)]))

    @rule(data=st.data())
    def a_state_change_delivered_again(self, data: st.DataObject) -> None:
        held = self._pick(data, lambda h: bool(h.spells))
        if held is None:
            return
        spell = data.draw(st.sampled_from(held.spells))
        again = [Seen(True, spell.started_at)]
        if spell.ended_at is not None:
            again.append(Seen(False, spell.ended_at))
        assert follow_spells(held.spells[-1], again) == []

    @rule(data=st.data())
    def terminated(self, data: st.DataObject) -> None:
        held = self._pick(data, lambda h: h.entry.status in HOLDS)
        if held is None:
            return
        last = held.spells[-1] if held.spells else None
        spells = follow_spells(last, [Seen(False, self.now, final=True)])
        self._set(held, following.ended(held.entry, None) or held.entry, spells)
        assert not self.held[held.entry.instance_id].running
        assert following.ended(self.held[held.entry.instance_id].entry, None) is None

    @rule(data=st.data(), more=st.sampled_from([timedelta(minutes=10), timedelta(days=3)]))
    def lease_extended(self, data: st.DataObject, more: timedelta) -> None:
        held = self._pick(data, lambda h: h.entry.holds and h.entry.expires_at is not None)
        if held is None or held.entry.expires_at is None:
            return
        event = SimpleNamespace(expires_at=max(held.entry.expires_at, self.now) + more)
        moved = following.extended(held.entry, event)  # type: ignore[arg-type]
        assert moved is not None
        self._set(held, moved)
        assert following.extended(moved, event) is None  # delivered again  # type: ignore[arg-type]
        self._unbudgeted()

    @rule(delta=st.sampled_from([timedelta(minutes=7), timedelta(hours=5), timedelta(days=2)]))
    def time_passes(self, delta: timedelta) -> None:
        """The clock moves; a running instance whose lease ends meanwhile is stopped then (the
        scheduler's expiry), and a new month may begin."""
        later = self.now + delta
        for held in list(self.held.values()):
            end = held.entry.expires_at
            if held.running and end is not None and end <= later:
                self._set(held, spells=follow_spells(held.spells[-1], [Seen(False, end)]))
        month = month_of(self.now)
        self.now = later
        if month_of(later) != month:
            self._unbudgeted()  # the month rolled over: everything held commits afresh

    @rule(budget=st.sampled_from([Decimal("0"), Decimal("3.5"), Decimal("25"), Decimal("400")]))
    def budget_set(self, budget: Decimal) -> None:
        self.budget = budget
        self.limits = Limits(instances=6, cpus=16, cost_per_month=budget)
        self._unbudgeted()

    @invariant()
    def never_a_cent_over(self) -> None:
        assert self.cost() <= self.ceiling

    @invariant()
    def usage_is_what_the_ledger_holds(self) -> None:
        live = [h.entry.amounts for h in self.held.values() if h.entry.status in HOLDS]
        assert self.usage == sum(live, Amounts())
        assert self.usage.instances <= 6 and self.usage.cpus <= 16

    @invariant()
    def spells_never_overlap(self) -> None:
        for held in self.held.values():
            for earlier, later in itertools.pairwise(held.spells):
                assert earlier.ended_at is not None and earlier.ended_at <= later.started_at


def _start(spell: Spell) -> datetime:
    return spell.started_at


TestQuotaBudget = QuotaBudget.TestCase
TestQuotaBudget.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)
