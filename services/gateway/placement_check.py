"""Whether a launch's placement asks only for accounts granted to the caller, and if not, why.
Pure: the rule is shared.eligibility's (the scheduler's too); ``accounts.placement_possible``
answers the common case in SQL by the same rule."""

from __future__ import annotations

from collections.abc import Sequence

from services.gateway.schemas import ProviderAccountView
from shared import eligibility


class PlacementRefused(ValueError):
    pass


def check_placement(placement: eligibility.Wanted, granted: Sequence[ProviderAccountView]) -> None:
    """Raise PlacementRefused, saying why, unless some granted account fits the placement."""
    if eligibility.eligible(granted, placement):
        return
    if not granted:
        raise PlacementRefused("No provider account is granted to you; ask an admin for one.")
    named = [a for a in granted if eligibility.is_named(a, placement.account)]
    if not named:
        raise PlacementRefused(f"No provider account {placement.account!r} is granted to you.")
    if not any(eligibility.is_on(a, placement.provider) for a in named):
        raise PlacementRefused(
            f"None of the accounts granted to you is on provider {placement.provider!r}."
        )
    raise PlacementRefused(f"No account granted to you offers region {placement.region!r}.")
