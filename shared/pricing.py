"""Prices, pure: what a size costs an hour on an account, and what a launch is admitted at.

A size's price is the account's ``config.prices`` entry for it where the admin set one (a
negotiated rate wins), else the price the cloud's libcloud driver gives (the simulated cloud's
own, EC2's pricing table), else unknown (None). Placement takes the cheapest size that fits on
each account; a launch is admitted, before it is placed, at the highest of those prices among
the accounts it may go to, and quota releases the difference once it is placed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Protocol, TypeVar


class Priced(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def cpus(self) -> int: ...
    @property
    def memory_mb(self) -> int: ...
    @property
    def price_per_hour(self) -> float | None: ...


def price_of(size_id: str, driver_price: float | None, config: Mapping[str, Any]) -> float | None:
    """``size_id``'s hourly price on an account with ``config``: its ``prices`` entry, else the
    driver's (a driver that knows no price says None or 0), else None."""
    table = config.get("prices")
    if isinstance(table, Mapping) and size_id in table:
        try:
            price = float(table[size_id])
        except (TypeError, ValueError):
            return None
        return price if math.isfinite(price) and price >= 0 else None
    return float(driver_price) if driver_price else None


S = TypeVar("S", bound=Priced)


def cheapest_fit(sizes: Iterable[S], cpus: int, memory_mb: int) -> S | None:
    """The size placement takes: the cheapest with enough cpus and memory (an unpriced size
    after every priced one), then the smallest."""
    fitting = [s for s in sizes if s.cpus >= cpus and s.memory_mb >= memory_mb]
    return min(
        fitting, key=lambda s: (_rank(s.price_per_hour), s.cpus, s.memory_mb, s.id), default=None
    )


def _rank(price: float | None) -> float:
    return math.inf if price is None else price


def admission_price(
    catalogs: Iterable[Iterable[Priced] | None], cpus: int, memory_mb: int
) -> float | None:
    """The price a launch is admitted at: the highest, over the accounts it may go to (their
    catalogs, None where not read yet), of the size placement would take there. None when any
    of them is unknown; 0 when no account has a size that fits (the launch will fail anyway)."""
    highest = 0.0
    for catalog in catalogs:
        if catalog is None:
            return None
        size = cheapest_fit(catalog, cpus, memory_mb)
        if size is None:
            continue
        if size.price_per_hour is None:
            return None
        highest = max(highest, size.price_per_hour)
    return highest
