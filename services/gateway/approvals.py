"""Approval rules, pure: which rules hold a launch, and how long an approval may wait.

A rule matches when every condition it gives holds (cpus or memory strictly over, the admission
price strictly over or unknown, any account the launch may go to listed by id or name, the
owner listed); a launch is held when any rule matches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from services.gateway.schemas import ApprovalConditions, ApprovalRule


@dataclass(frozen=True)
class HeldLaunch:
    """What the rules look at in a launch."""

    owner: str
    cpus: int
    memory_mb: int
    price_per_hour: float | None  # the admission price; None: not known yet
    accounts: tuple[tuple[str, str], ...]  # (id, name) of each account it may go to


def _holds(when: ApprovalConditions, launch: HeldLaunch) -> bool:
    return (
        _over(launch.cpus, when.cpus_over)
        and _over(launch.memory_mb, when.memory_mb_over)
        and _price_over(launch.price_per_hour, when.cost_per_hour_over)
        and _goes_to_listed_account(launch.accounts, when.accounts)
        and (when.owners is None or launch.owner in when.owners)
    )


def _over(value: float, threshold: float | None) -> bool:
    """Whether ``value`` is strictly over ``threshold`` (no threshold: the condition holds)."""
    return threshold is None or value > threshold


def _price_over(price: float | None, threshold: float | None) -> bool:
    # An unknown price is held, to be safe.
    return price is None or _over(price, threshold)


def _goes_to_listed_account(
    accounts: tuple[tuple[str, str], ...], listed: Sequence[str] | None
) -> bool:
    """Whether any of ``accounts`` (id, name) is ``listed`` by id or name (no list: it holds)."""
    if listed is None:
        return True
    wanted = set(listed)
    return any(account_id in wanted or name in wanted for account_id, name in accounts)


def matching_rules(rules: Sequence[ApprovalRule], launch: HeldLaunch) -> list[str]:
    """The names of the rules that hold ``launch``, in the rules' order."""
    return [rule.name for rule in rules if _holds(rule.when, launch)]


def spoken_duration(seconds: float) -> str:
    """``seconds`` as a person says it: "24 h", "90 min", "2.5 s"."""
    for unit, size in (("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)} {unit}"
    return f"{seconds:g} s"
