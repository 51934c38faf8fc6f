"""Handlers get their keyword-only dependencies by name, from their service's bootstrap."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from services.gateway.handlers import SUBSCRIPTIONS as GATEWAY
from services.notifier.handlers import SUBSCRIPTIONS as NOTIFIER
from services.notifier.handlers import SYSLOG
from services.poller.handlers import SUBSCRIPTIONS as POLLER
from services.quota.handlers import SUBSCRIPTIONS as QUOTA
from services.scheduler.handlers import SUBSCRIPTIONS as SCHEDULER
from shared.consumer import Subscription
from shared.events import InstanceRejected
from shared.injection import MissingDependency, inject
from shared.ordering import OrderKey

calls: list[tuple[object, ...]] = []


async def needs_clock(event: object, uow: object, *, clock: Any, repo: str = "real") -> None:
    calls.append((event, uow, clock, repo))


async def needs_nothing(event: object, uow: object) -> None:
    calls.append((event, uow))


def subscription(handler: Any, **options: Any) -> Subscription:
    return Subscription(InstanceRejected, handler, order_by=OrderKey.OWNER, **options)


async def test_a_dependency_is_bound_by_its_keyword_and_a_default_stays() -> None:
    calls.clear()
    (bound,) = inject([subscription(needs_clock)], {"clock": "the clock", "worker": "unused"})
    assert bound.handler is not None
    await bound.handler("event", "uow")
    assert calls == [("event", "uow", "the clock", "real")]


async def test_a_default_is_replaced_when_the_dependencies_have_that_name() -> None:
    calls.clear()
    (bound,) = inject([subscription(needs_clock)], {"clock": 1, "repo": "fake"})
    assert bound.handler is not None
    await bound.handler("event", "uow")
    assert calls == [("event", "uow", 1, "fake")]


def test_the_queue_keeps_the_handler_s_name_after_binding() -> None:
    (bound,) = inject([subscription(needs_clock)], {"clock": 1})
    (named,) = inject([subscription(needs_clock, name="other")], {"clock": 1})
    assert (bound.handler_name, named.handler_name) == ("needs_clock", "other")


def test_a_handler_without_dependencies_is_kept_as_it_is() -> None:
    (kept,) = inject([subscription(needs_nothing)], {"clock": 1})
    assert kept.handler is needs_nothing


def test_a_missing_dependency_stops_the_start_naming_handler_and_keyword() -> None:
    with pytest.raises(MissingDependency, match="'needs_clock' needs clock"):
        inject([subscription(needs_clock)], {})


def test_batch_handlers_are_bound_too() -> None:
    (bound,) = inject(
        [Subscription(InstanceRejected, batch_handler=needs_clock, order_by=None)], {"clock": 1}
    )
    assert bound.handler is None and bound.batch_handler is not None


# What each service's bootstrap gives (besides clock and settings, which every runtime gives).
GIVEN = {
    "gateway": (GATEWAY, set()),
    "scheduler": (SCHEDULER, {"clouds", "catalogs", "book", "worker"}),
    "poller": (POLLER, {"clouds"}),
    "quota": (QUOTA, set()),
    "notifier": ((*NOTIFIER, SYSLOG), {"sender", "hostname"}),
}


def keywords(table: tuple[Subscription, ...]) -> set[str]:
    needed = set()
    for s in table:
        target = s.handler or s.batch_handler
        for p in inspect.signature(target).parameters.values():
            if p.kind is p.KEYWORD_ONLY and p.default is p.empty:
                needed.add(p.name)
    return needed


@pytest.mark.parametrize("service", sorted(GIVEN))
def test_each_service_gives_what_its_handlers_ask_for_and_nothing_unused(service: str) -> None:
    table, given = GIVEN[service]
    assert given <= keywords(table) <= {"clock", "settings", *given}
    bound = inject(table, dict.fromkeys({"clock", "settings", *given}, object()))
    assert [s.handler_name for s in bound] == [s.handler_name for s in table]
