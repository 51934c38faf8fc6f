"""Prices: the account's table wins, then the driver's; launches are admitted at the highest
price placement could pick."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from shared.events import CatalogSize
from shared.pricing import admission_price, cheapest_fit, price_of


@pytest.mark.parametrize(
    ("driver_price", "config", "expected"),
    [
        (0.04, {}, 0.04),
        (0.04, {"prices": {"m1": 0.03}}, 0.03),  # a negotiated rate wins
        (None, {"prices": {"m1": "0.05"}}, 0.05),
        (None, {}, None),
        (0.0, {}, None),  # libcloud says 0 when it knows no price
        (0.04, {"prices": {"other": 1}}, 0.04),
        (0.04, {"prices": {"m1": "cheap"}}, None),
        (0.04, {"prices": {"m1": -1}}, None),
        (0.04, {"prices": {"m1": 0}}, 0.0),  # free, as the admin says
        (0.04, {"prices": ["m1"]}, 0.04),
    ],
)
def test_price_of(driver_price: float | None, config: dict, expected: float | None) -> None:
    assert price_of("m1", driver_price, config) == expected


def size(id: str, cpus: int, memory_mb: int, price: float | None) -> CatalogSize:
    return CatalogSize(id=id, cpus=cpus, memory_mb=memory_mb, price_per_hour=price)


SMALL, MEDIUM, LARGE = size("s", 1, 1024, 0.01), size("m", 2, 4096, 0.04), size("l", 4, 16384, 0.16)


def test_cheapest_fit_takes_the_cheapest_size_big_enough() -> None:
    assert cheapest_fit([LARGE, MEDIUM, SMALL], 2, 2048) == MEDIUM
    assert cheapest_fit([LARGE, MEDIUM, SMALL], 8, 1024) is None


def test_an_unpriced_size_comes_after_every_priced_one() -> None:
    mystery = size("x", 2, 4096, None)
    assert cheapest_fit([mystery, LARGE], 2, 4096) == LARGE
    assert cheapest_fit([mystery], 2, 4096) == mystery


def test_the_admission_price_is_the_dearest_account_placement_could_choose() -> None:
    dear = [size("m", 2, 4096, 0.07)]
    assert admission_price([[SMALL, MEDIUM, LARGE], dear], 2, 2048) == 0.07
    assert admission_price([[SMALL, MEDIUM, LARGE], dear], 1, 512) == 0.07
    assert admission_price([[SMALL, MEDIUM, LARGE]], 1, 512) == 0.01


def test_an_account_without_a_fitting_size_does_not_count() -> None:
    assert admission_price([[SMALL], [SMALL, LARGE]], 4, 8192) == 0.16
    assert admission_price([[SMALL]], 4, 8192) == 0.0


def test_an_unknown_catalog_or_price_makes_the_admission_price_unknown() -> None:
    assert admission_price([[SMALL], None], 1, 512) is None
    assert admission_price([[size("x", 1, 1024, None)]], 1, 512) is None


@dataclass(frozen=True)
class _Plain:
    """Any row with the four fields prices (the scheduler's own Size, say)."""

    id: str
    cpus: int
    memory_mb: int
    price_per_hour: float | None


def test_any_row_with_the_fields_is_priced() -> None:
    rows = [_Plain("a", 1, 1024, 0.02), _Plain("b", 1, 1024, 0.01)]
    assert cheapest_fit(rows, 1, 1024) == rows[1]
