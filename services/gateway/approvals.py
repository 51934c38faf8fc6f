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
    if when.cpus_over is not None and not launch.cpus > when.cpus_over:
        return False
    if when.memory_mb_over is not None and not launch.memory_mb > when.memory_mb_over:
        return False
    if (
        when.cost_per_hour_over is not None
        and launch.price_per_hour is not None  # unknown: held, to be safe
        and not launch.price_per_hour > when.cost_per_hour_over
    ):
        return False
    if when.accounts is not None:
        listed = set(when.accounts)
        if not any(account_id in listed or name in listed for account_id, name in launch.accounts):
            return False
    return when.owners is None or launch.owner in when.owners


def matching_rules(rules: Sequence[ApprovalRule], launch: HeldLaunch) -> list[str]:
    """The names of the rules that hold ``launch``, in the rules' order."""
    return [rule.name for rule in rules if _holds(rule.when, launch)]


def spoken_duration(seconds: float) -> str:
    """``seconds`` as a person says it: "24 h", "90 min", "2.5 s"."""
    for unit, size in (("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)} {unit}"
    return f"{seconds:g} s"
