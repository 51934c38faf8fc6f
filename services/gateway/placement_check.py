"""Whether a launch's placement asks only for accounts granted to the caller, and if not, why.
Pure: the same rules as ``accounts.placement_possible``, which answers the common case in SQL."""

from __future__ import annotations

from collections.abc import Sequence

from services.gateway.schemas import PlacementIn, ProviderAccountView


class PlacementRefused(ValueError):
    pass


def is_named(account: ProviderAccountView, name: str | None) -> bool:
    """Whether the placement's account (an id or a name) is this one, if it names one."""
    return name is None or name in (account.id, account.name)


def is_on(account: ProviderAccountView, provider: str | None) -> bool:
    return provider is None or account.provider == provider


def offers_region(account: ProviderAccountView, region: str | None) -> bool:
    """An account that declares its regions (a list in its config) offers those; one that
    declares none may offer any."""
    declared = account.config.get("regions")
    return region is None or not isinstance(declared, list) or region in declared


def eligible(
    granted: Sequence[ProviderAccountView], placement: PlacementIn
) -> list[ProviderAccountView]:
    """The accounts among ``granted`` that fit the placement."""
    return [
        a
        for a in granted
        if is_named(a, placement.account)
        and is_on(a, placement.provider)
        and offers_region(a, placement.region)
    ]


def check_placement(placement: PlacementIn, granted: Sequence[ProviderAccountView]) -> None:
    """Raise PlacementRefused, saying why, unless some granted account fits the placement."""
    if eligible(granted, placement):
        return
    if not granted:
        raise PlacementRefused("No provider account is granted to you; ask an admin for one.")
    named = [a for a in granted if is_named(a, placement.account)]
    if not named:
        raise PlacementRefused(f"No provider account {placement.account!r} is granted to you.")
    if not any(is_on(a, placement.provider) for a in named):
        raise PlacementRefused(
            f"None of the accounts granted to you is on provider {placement.provider!r}."
        )
    raise PlacementRefused(f"No account granted to you offers region {placement.region!r}.")
