"""Catalogs as the scheduler reads them: each size priced (config.prices over the driver's), each
read from a cloud announced once, a failed read or announcement left for the next round. A
driver and a cloud of a few lines stand in for libcloud's (no network)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from libcloud.compute.base import NodeSize
from structlog.testing import capture_logs

from services.scheduler.catalogs import CatalogCache, catalog_read_event
from services.scheduler.cloud_calls import CatalogRead, read_catalog
from shared.accounts import Account
from shared.events import CatalogSize, SealedSecret

SEALED = SealedSecret(key_id="k", nonce="bm9uY2U=", ciphertext="c2VjcmV0")


class Driver:
    connection = SimpleNamespace()

    def list_sizes(self) -> list[NodeSize]:
        return [
            NodeSize("small", "small", 1024, 0, 0, 0.01, self, extra={"cpus": 1}),  # type: ignore[arg-type]
            NodeSize("big", "big", 8192, 0, 0, 0.2, self, extra={"cpus": 4}),  # type: ignore[arg-type]
            NodeSize("free", "free", 512, 0, 0, None, self, extra={"cpus": 1}),  # type: ignore[arg-type]
        ]

    def list_images(self) -> list[Any]:
        return [SimpleNamespace(id="img-1", name="debian-12")]

    def list_locations(self) -> list[Any]:
        return [SimpleNamespace(id="north")]


class Cloud:
    """CloudConnections as the cache uses it: each call runs on the one driver, or raises."""

    def __init__(self) -> None:
        self.failing: Exception | None = None
        self.calls = 0

    async def call(
        self, account: Account, operation: Callable[[Any], Any], *, read_only: bool = False
    ) -> Any:
        self.calls += 1
        if self.failing is not None:
            raise self.failing
        return operation(Driver())


def account(revision: int = 1, **config: Any) -> Account:
    return Account("id-a", "team-a", "simulator", config, SEALED, revision)


def test_config_prices_win_over_the_drivers_and_no_price_is_unknown() -> None:
    read = read_catalog(Driver(), {"prices": {"big": 0.15}})  # type: ignore[arg-type]
    prices = {s.id: s.price_per_hour for s in read.catalog.sizes}
    assert prices == {"small": 0.01, "big": 0.15, "free": None}
    assert read.catalog.regions == ("north",)


def test_the_event_carries_every_size_with_its_price_and_the_revision() -> None:
    read = read_catalog(Driver(), {})  # type: ignore[arg-type]
    when = datetime(2026, 11, 26, 12, tzinfo=UTC)
    event = catalog_read_event(account(revision=7), read, lambda: when)
    assert event.account_id == "id-a" and event.revision == 7 and event.read_at == when
    assert event.sizes[1] == CatalogSize(id="big", cpus=4, memory_mb=8192, price_per_hour=0.2)
    assert event.regions == ["north"]


class Announced:
    def __init__(self) -> None:
        self.reads: list[tuple[str, CatalogRead]] = []
        self.failing = False

    async def __call__(self, acct: Account, read: CatalogRead) -> None:
        if self.failing:
            raise ConnectionError("database gone")
        self.reads.append((acct.id, read))


@pytest.fixture
def now() -> list[float]:
    return [100.0]


async def test_each_read_is_announced_and_a_fresh_catalog_is_not_read_again(
    now: list[float],
) -> None:
    cloud, announced = Cloud(), Announced()
    cache = CatalogCache(cloud, refresh_after=60, clock=lambda: now[0], announce=announced)  # type: ignore[arg-type]
    await cache.refresh([account()])
    await cache.refresh([account()])
    await cache.get(account())
    assert (cloud.calls, len(announced.reads)) == (1, 1)
    now[0] += 61  # stale: read and announced again
    await cache.refresh([account()])
    assert (cloud.calls, len(announced.reads)) == (2, 2)
    await cache.refresh([account(revision=2)])  # a new revision: its own catalog
    assert (cloud.calls, len(announced.reads)) == (3, 3)


async def test_a_failed_read_is_logged_and_tried_at_the_next_round(now: list[float]) -> None:
    cloud, announced = Cloud(), Announced()
    cache = CatalogCache(cloud, clock=lambda: now[0], announce=announced)  # type: ignore[arg-type]
    cloud.failing = ConnectionError("no route to cloud")
    with capture_logs() as logs:
        await cache.refresh([account()])
    assert announced.reads == []
    [failed] = [line for line in logs if line["event"] == "catalog_read_failed"]
    assert failed["account"] == "team-a"
    assert "no route to cloud" in failed["error"]
    cloud.failing = None
    await cache.refresh([account()])
    assert len(announced.reads) == 1


async def test_an_announcement_that_failed_is_made_at_the_next_round_without_a_read(
    now: list[float],
) -> None:
    cloud, announced = Cloud(), Announced()
    cache = CatalogCache(cloud, clock=lambda: now[0], announce=announced)  # type: ignore[arg-type]
    announced.failing = True
    await cache.get(account())  # the launch still gets its catalog
    announced.failing = False
    await cache.refresh([account()])
    await cache.refresh([account()])
    assert (cloud.calls, len(announced.reads)) == (1, 1)
