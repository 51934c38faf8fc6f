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
    candidates = granted
    if placement.account is not None:
        candidates = [a for a in candidates if placement.account in (a["id"], a["name"])]
        if not candidates:
            raise PlacementRefused(f"No provider account {placement.account!r} is granted to you.")
    if placement.provider is not None:
        candidates = [a for a in candidates if a["provider"] == placement.provider]
        if not candidates:
            raise PlacementRefused(
                f"None of the accounts granted to you is on provider {placement.provider!r}."
            )
    if placement.region is not None:
        declared = [a for a in candidates if isinstance(a["config"].get("regions"), list)]
        if (
            declared
            and len(declared) == len(candidates)
            and not any(placement.region in a["config"]["regions"] for a in declared)
        ):
            raise PlacementRefused(f"No account granted to you offers region {placement.region!r}.")
