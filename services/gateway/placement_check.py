"""Whether a launch's placement asks only for accounts granted to the caller. Pure."""

from __future__ import annotations

from typing import Any

from services.gateway.schemas import PlacementIn


class PlacementRefused(ValueError):
    pass


def check_placement(placement: PlacementIn, granted: list[dict[str, Any]]) -> None:
    """Raise PlacementRefused, saying why, unless some granted account fits the placement."""
    if not granted:
        raise PlacementRefused("No provider account is granted to you; ask an admin for one.")
    candidates = _named(granted, placement.account)
    candidates = _on_provider(candidates, placement.provider)
    _check_region(candidates, placement.region)


def _named(candidates: list[dict[str, Any]], account: str | None) -> list[dict[str, Any]]:
    """The candidates the placement's account (id or name) picks, if it names one."""
    if account is None:
        return candidates
    named = [a for a in candidates if account in (a["id"], a["name"])]
    if not named:
        raise PlacementRefused(f"No provider account {account!r} is granted to you.")
    return named


def _on_provider(candidates: list[dict[str, Any]], provider: str | None) -> list[dict[str, Any]]:
    """The candidates on the placement's provider, if it names one."""
    if provider is None:
        return candidates
    on_provider = [a for a in candidates if a["provider"] == provider]
    if not on_provider:
        raise PlacementRefused(f"None of the accounts granted to you is on provider {provider!r}.")
    return on_provider


def _check_region(candidates: list[dict[str, Any]], region: str | None) -> None:
    """Refuse a region only when every candidate declares its regions and none offers it; an
    account that declares none may offer any."""
    if region is None:
        return
    declared = [a for a in candidates if isinstance(a["config"].get("regions"), list)]
    if (
        declared
        and len(declared) == len(candidates)
        and not any(region in a["config"]["regions"] for a in declared)
    ):
        raise PlacementRefused(f"No account granted to you offers region {region!r}.")
