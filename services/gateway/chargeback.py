"""Chargeback arithmetic: running seconds per owner and account become hours and cost, per
account and summed per owner. Pure: the repository reads the seconds, the route shapes the answer.
Cost is each running second at the hourly price of the size the instance was placed on (an
instance placed without a price counts nothing)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

DEFAULT_PERIOD = timedelta(days=30)
DECIMALS = 6


@dataclass(frozen=True)
class RunningSeconds:
    """One owner's running time on one account within a period, weighted three ways."""

    owner: str
    account_id: str
    instance_seconds: float
    cpu_seconds: float
    memory_mb_seconds: float
    price_seconds: float = 0.0  # the sum of seconds times the hourly price


@dataclass(frozen=True)
class Hours:
    instance_hours: float
    cpu_hours: float
    memory_mb_hours: float
    cost: float = 0.0

    def __add__(self, other: Hours) -> Hours:
        return Hours(
            round(self.instance_hours + other.instance_hours, DECIMALS),
            round(self.cpu_hours + other.cpu_hours, DECIMALS),
            round(self.memory_mb_hours + other.memory_mb_hours, DECIMALS),
            round(self.cost + other.cost, DECIMALS),
        )


NO_HOURS = Hours(0.0, 0.0, 0.0)


@dataclass(frozen=True)
class OwnerHours:
    owner: str
    total: Hours
    accounts: dict[str, Hours]


def period(
    start: datetime | None, end: datetime | None, now: datetime
) -> tuple[datetime, datetime]:
    """The period asked for: up to now and over the last 30 days unless said otherwise. Raises
    ValueError when it would end before it starts."""
    end = end or now
    start = start or end - DEFAULT_PERIOD
    if start >= end:
        raise ValueError("`from` must be before `to`.")
    return start, end


def _hours(seconds: float) -> float:
    return round(seconds / 3600, DECIMALS)


def per_owner(rows: Iterable[RunningSeconds]) -> list[OwnerHours]:
    """Hours per account (each rounded), and per owner the sum of their accounts' hours, in the
    order the owners first appear."""
    accounts: dict[str, dict[str, Hours]] = {}
    for row in rows:
        hours = Hours(
            _hours(row.instance_seconds),
            _hours(row.cpu_seconds),
            _hours(row.memory_mb_seconds),
            _hours(row.price_seconds),
        )
        mine = accounts.setdefault(row.owner, {})
        mine[row.account_id] = mine.get(row.account_id, NO_HOURS) + hours
    return [
        OwnerHours(owner, sum(by_account.values(), NO_HOURS), by_account)
        for owner, by_account in accounts.items()
    ]
