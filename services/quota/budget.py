"""Budget arithmetic, pure: what an owner's instances cost this month, and whether a launch
passes their ``cost_per_month`` budget.

Money comes as floats (the wire's, the catalogs' price unit per hour) and is taken as
``Decimal(str(x))``; durations are whole microseconds. A cost is price x microseconds / one
hour's microseconds, kept as an exact :class:`~fractions.Fraction`, so sums and the comparison
with a budget are exact: no rounding can let a launch pass a budget by a fraction of a cent.
Figures are rounded only to be shown (:func:`shown`, :func:`figure`).

An owner's cost this month (UTC), at ``now``, is, over their ledger entries:
- *spent*: each running spell of the entry, clipped to [month start, now], x its price;
- *committed*, for an entry that holds (reserved or active, a stopped instance included, as
  for the instance count): price x the time from now to the month's end or the entry's lease
  end, whichever comes first.
An entry whose price is not known costs nothing; a launch whose price is not known is refused
to an owner who has a budget, since it cannot be checked against it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

HOUR = timedelta(hours=1)
_MICROSECOND = timedelta(microseconds=1)
_MICROS_PER_HOUR = HOUR // _MICROSECOND
BUDGET = "cost_per_month"  # the first word of every budget refusal (accounting.limit_of)


def money(value: float | Decimal | None) -> Decimal | None:
    """A price or budget as quota computes with it (None stays unknown)."""
    if value is None:
        return None
    return value if isinstance(value, Decimal) else Decimal(str(value))


def month_of(now: datetime) -> tuple[datetime, datetime]:
    """The UTC month ``now`` falls in: its first instant and the next month's."""
    now = now.astimezone(UTC)
    start = datetime(now.year, now.month, 1, tzinfo=UTC)
    end = datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=UTC)
    return start, end


def hours(start: datetime, end: datetime) -> Fraction:
    """Hours from ``start`` to ``end``, exactly (0 when ``end`` is not after ``start``)."""
    if end <= start:
        return Fraction(0)
    return Fraction((end - start) // _MICROSECOND, _MICROS_PER_HOUR)


@dataclass(frozen=True)
class Spell:
    """A time the instance ran; ``ended_at`` None: it still runs."""

    started_at: datetime
    ended_at: datetime | None = None


@dataclass(frozen=True)
class Costed:
    """A ledger entry as the budget sees it."""

    price: Decimal | None  # per hour; None: not known
    holds: bool  # reserved or active (stopped included)
    expires_at: datetime | None = None  # its lease's end; None: no lease
    spells: tuple[Spell, ...] = ()


def spent(entry: Costed, now: datetime) -> Fraction:
    """What the entry's running spells cost from the month's start to ``now``."""
    if entry.price is None:
        return Fraction(0)
    start, _ = month_of(now)
    ran = sum(
        (hours(max(s.started_at, start), min(s.ended_at or now, now)) for s in entry.spells),
        Fraction(0),
    )
    return Fraction(entry.price) * ran


def committed_until(now: datetime, expires_at: datetime | None) -> datetime:
    """Until when a holding entry is committed: the month's end, or its lease's end if that
    comes first (never before ``now``)."""
    _, end = month_of(now)
    if expires_at is not None and expires_at < end:
        return max(expires_at, now)
    return end


def projection(price: Decimal | None, expires_at: datetime | None, now: datetime) -> Fraction:
    """What holding an entry priced ``price`` costs from ``now`` to the month's or its lease's
    end (0 when the price is not known)."""
    if price is None:
        return Fraction(0)
    return Fraction(price) * hours(now, committed_until(now, expires_at))


def committed(entry: Costed, now: datetime) -> Fraction:
    """What the entry will cost from ``now`` on this month, if it holds."""
    return projection(entry.price, entry.expires_at, now) if entry.holds else Fraction(0)


def cost_this_month(entries: Iterable[Costed], now: datetime) -> Fraction:
    """An owner's cost this month at ``now``: spent plus committed, over their entries."""
    return sum((spent(e, now) + committed(e, now) for e in entries), Fraction(0))


def refusal(
    cost: Fraction,
    budget: Decimal | None,
    price: Decimal | None,
    expires_at: datetime | None,
    now: datetime,
) -> str | None:
    """Why a launch priced ``price`` (lease ending ``expires_at``) does not fit a budget of
    which ``cost`` is spent or committed already; None when it fits (or there is no budget).
    The reason's first word is ``cost_per_month``."""
    if budget is None:
        return None
    if price is None:
        return (
            f"{BUDGET} budget {figure(budget)} cannot be checked: the price of this launch is "
            "not known yet (no catalog read for an account it may go to)"
        )
    adds = projection(price, expires_at, now)
    if cost + adds <= Fraction(budget):
        return None
    until = committed_until(now, expires_at)
    lease = ", its lease's end" if until != month_of(now)[1] else ""
    return (
        f"{BUDGET} budget {figure(budget)} would be passed: {figure(cost)} spent or committed "
        f"this month, this launch would add {figure(adds)} ({figure(price)}/h until "
        f"{until:%Y-%m-%d %H:%M} UTC{lease})"
    )


CENT = Decimal("0.01")


def cost_moved(
    reported: Decimal, reported_at: datetime | None, cost: Fraction, now: datetime
) -> bool:
    """Whether an owner's cost this month should be reported again: it moved by a cent or
    more since it was reported as ``reported`` at ``reported_at``, or moved at all since
    then if a month began meanwhile."""
    now_shown = shown(cost)
    if abs(now_shown - reported) >= CENT:
        return True
    new_month = reported_at is None or month_of(reported_at) != month_of(now)
    return new_month and now_shown != reported


def shown(cost: Fraction | Decimal) -> Decimal:
    """A cost as it is reported (``quota.usage_changed``): rounded to 4 decimals."""
    return _decimal(cost).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)


def figure(amount: Fraction | Decimal) -> str:
    """An amount in a reason: at least 2 decimals, at most 4 (``10.00``, ``0.0416``)."""
    text = f"{shown(amount):f}".rstrip("0")
    whole, _, decimals = text.partition(".")
    return f"{whole}.{decimals.ljust(2, '0')}"


def _decimal(amount: Fraction | Decimal) -> Decimal:
    if isinstance(amount, Decimal):
        return amount
    return Decimal(amount.numerator) / Decimal(amount.denominator)


# -- running spells -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """One state change of an instance, as spells need it; ``final``: terminated."""

    running: bool
    at: datetime
    final: bool = False


def follow_spells(last: Spell | None, seen: Iterable[Seen]) -> list[Spell]:
    """The spells to write after state changes ``seen`` (in order) of an instance whose latest
    spell is ``last``: each by its start, with its end as it now stands. Running opens a spell
    unless one is open or the change is older than the latest spell (a redelivery); any other
    state closes the open spell if the change is later than its start (:func:`_closes`)."""
    written: dict[datetime, Spell] = {}
    for change in seen:
        if change.running and _opens(last, change.at):
            last = Spell(change.at)
        elif not change.running and last is not None and last.ended_at is None:
            if not _closes(last, change):
                continue
            last = Spell(last.started_at, change.at)
        else:
            continue
        written[last.started_at] = last
    return list(written.values())


def _closes(spell: Spell, change: Seen) -> bool:
    """Whether a state other than running ends the open ``spell``: if it came after the spell
    began. At the very instant it began, only a termination does (it is final); another state
    then may be a stop from before a restart, delivered again, so the spell stays open: that
    counts more, never less."""
    return change.at > spell.started_at or (change.final and change.at == spell.started_at)


def _opens(last: Spell | None, at: datetime) -> bool:
    if last is None:
        return True
    return last.ended_at is not None and last.ended_at <= at and last.started_at < at
