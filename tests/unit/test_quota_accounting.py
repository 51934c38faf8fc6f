"""Quota arithmetic: limits, and a Hypothesis state machine over reserve, place, release and
redelivery that checks the invariants the quota service relies on."""

from __future__ import annotations

from collections.abc import Callable

import hypothesis.strategies as st
from hypothesis import given, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from services.quota.accounting import (
    HOLDS,
    Amounts,
    Ask,
    Limits,
    Status,
    after_end,
    after_placement,
    decide,
    one_instance,
    refusal,
    usage_delta,
)


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
