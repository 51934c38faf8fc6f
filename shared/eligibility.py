"""Which provider accounts fit a launch's placement. Pure.

One rule for the gateway, which refuses a launch no granted account fits (saying why), and for
the scheduler, which places it on one of them: an account fits when the placement names it (by
id or name) or names none, is on the placement's provider or names none, and offers its region.
An account whose config declares ``regions`` (a list) offers those; one that declares none may
offer any (its cloud's catalog has the last word, at placement).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol, TypeVar


class Candidate(Protocol):
    """An account as eligibility reads it."""

    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def provider(self) -> str: ...
    @property
    def config(self) -> Mapping[str, Any]: ...


class Wanted(Protocol):
    """A launch's placement: each part None where it leaves the choice open."""

    @property
    def provider(self) -> str | None: ...
    @property
    def account(self) -> str | None: ...
    @property
    def region(self) -> str | None: ...


C = TypeVar("C", bound=Candidate)


def declared_regions(config: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The regions an account's config says it offers; None when it says nothing of them."""
    declared = config.get("regions")
    return tuple(declared) if isinstance(declared, list) else None


def is_named(account: Candidate, name: str | None) -> bool:
    """Whether the placement's account (an id or a name) is this one, if it names one."""
    return name is None or name in (account.id, account.name)


def is_on(account: Candidate, provider: str | None) -> bool:
    return provider is None or account.provider == provider


def offers_region(account: Candidate, region: str | None) -> bool:
    declared = declared_regions(account.config)
    return region is None or declared is None or region in declared


def fits(account: Candidate, wanted: Wanted) -> bool:
    return (
        is_named(account, wanted.account)
        and is_on(account, wanted.provider)
        and offers_region(account, wanted.region)
    )


def eligible(accounts: Iterable[C], wanted: Wanted) -> list[C]:
    """The accounts that fit the placement, in the order given."""
    return [a for a in accounts if fits(a, wanted)]
