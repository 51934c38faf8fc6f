"""Placement, pure: which accounts may take a launch, which offer fits, and in what order to try.

Filters drop what cannot work (not granted, not fitting the placement as :mod:`shared.eligibility`
says, no size big enough, a size dearer than the price the launch was admitted at, image
unknown, an account or region another instance of the launch's deployment group holds when the
group is spread); weighers order the rest (cheaper first, an unpriced size after every priced
one, then the account with fewer Boreas instances, then the one with more headroom). Every
decision comes with a reason a person can read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from shared import eligibility
from shared.accounts import Account
from shared.pricing import cheapest_fit


@dataclass(frozen=True)
class GrantedAccount(Account):
    """An account as the scheduler keeps it: with the users it is granted to (``*``: all)."""

    grants: frozenset[str]

    def granted_to(self, owner: str) -> bool:
        return owner in self.grants or "*" in self.grants

    @property
    def regions(self) -> tuple[str, ...]:
        return eligibility.declared_regions(self.config) or ()


@dataclass(frozen=True)
class Request:
    owner: str
    image: str
    cpus: int
    memory_mb: int
    provider: str | None = None
    account: str | None = None
    region: str | None = None
    # The price per hour quota admitted the launch at (None: unknown): no dearer size is taken.
    price_per_hour: float | None = None
    # A deployment member (its id as text: the request is kept as JSON), its group, and the
    # group's spread: no two of its instances on one account (or in one region).
    deployment_id: str | None = None
    group: str | None = None
    spread: Literal["accounts", "regions"] | None = None

    def spread_place(self, account_id: str, region: str | None) -> str | None:
        """The place a launch on ``account_id`` in ``region`` claims for its group (None: the
        launch is not spread)."""
        if self.deployment_id is None or self.group is None or self.spread is None:
            return None
        return account_id if self.spread == "accounts" else region


@dataclass(frozen=True)
class Size:
    """A size an account offers (:class:`shared.pricing.Priced`): its price per hour as
    :func:`shared.pricing.price_of` gives it, None where neither the cloud nor the account's
    ``config.prices`` says."""

    id: str
    cpus: int
    memory_mb: int
    price_per_hour: float | None


@dataclass(frozen=True)
class Catalog:
    """What one account offers, as listed by its cloud."""

    sizes: tuple[Size, ...]
    images: Mapping[str, str]  # image name → provider image id
    regions: tuple[str, ...]


@dataclass(frozen=True)
class Offer:
    account: GrantedAccount
    region: str | None
    size: Size
    image_id: str
    load: int  # Boreas instances already on the account
    headroom: int | None  # instances the account may still take, None: no known limit


def eligible_accounts(accounts: Iterable[GrantedAccount], request: Request) -> list[GrantedAccount]:
    """Accounts granted to the owner that fit the request's placement."""
    return eligibility.eligible((a for a in accounts if a.granted_to(request.owner)), request)


def price_text(price: float | None) -> str:
    return "price unknown" if price is None else f"{price:g}/h"


def over_ceiling(size: Size, ceiling: float | None) -> bool:
    """Whether ``size`` costs more than the launch was admitted at (an unknown price on either
    side cannot be said to)."""
    return ceiling is not None and size.price_per_hour is not None and size.price_per_hour > ceiling


def resolve_image(name: str, catalog: Catalog, account: GrantedAccount) -> str | None:
    """A logical image name → this account's image id: the account's own mapping first
    (config ``images``), then an image the cloud lists under that name, then an id as given."""
    mapping = account.config.get("images") or {}
    if name in mapping:
        return str(mapping[name])
    if name in catalog.images:
        return catalog.images[name]
    return name if name in catalog.images.values() else None


def offer_for(
    account: GrantedAccount,
    catalog: Catalog,
    request: Request,
    *,
    load: int,
    headroom: int | None,
    taken_regions: frozenset[str] = frozenset(),
) -> Offer | str:
    """The account's offer, or the reason it has none. ``taken_regions``: regions other
    instances of a group spread across regions hold already."""
    if headroom is not None and headroom <= 0:
        return f"{account.name}: no headroom left"
    size = _affordable_size(account, catalog, request)
    if isinstance(size, str):
        return size
    image_id = resolve_image(request.image, catalog, account)
    if image_id is None:
        return f"{account.name}: no image {request.image!r}"
    if request.spread == "regions":
        return _spread_offer(
            account, catalog, request, taken_regions, size, image_id, load, headroom
        )
    return _one_region_offer(account, catalog, request, size, image_id, load, headroom)


def _affordable_size(account: GrantedAccount, catalog: Catalog, request: Request) -> Size | str:
    """The cheapest size that fits the request, or the reason there is none (no size big
    enough, or the one that fits costs more than the launch was admitted at)."""
    size = cheapest_fit(catalog.sizes, request.cpus, request.memory_mb)
    if size is None:
        return f"{account.name}: no size with {request.cpus} cpus and {request.memory_mb} MB"
    if over_ceiling(size, request.price_per_hour):
        return (
            f"{account.name}: {size.id} costs {price_text(size.price_per_hour)}, more than the "
            f"{price_text(request.price_per_hour)} the launch was admitted at"
        )
    return size


def _one_region_offer(
    account: GrantedAccount,
    catalog: Catalog,
    request: Request,
    size: Size,
    image_id: str,
    load: int,
    headroom: int | None,
) -> Offer | str:
    """The request's region, else the account's first (None if it declares none), as long as
    the cloud lists it (or lists no regions at all)."""
    region = request.region or (account.regions[0] if account.regions else None)
    if region is not None and catalog.regions and region not in catalog.regions:
        return f"{account.name}: no region {region!r}"
    return Offer(account, region, size, image_id, load, headroom)


def _spread_offer(
    account: GrantedAccount,
    catalog: Catalog,
    request: Request,
    taken: frozenset[str],
    size: Size,
    image_id: str,
    load: int,
    headroom: int | None,
) -> Offer | str:
    """The first region of the account (its own list, else its cloud's) that no other
    instance of the group holds."""
    regions = [request.region] if request.region else list(account.regions or catalog.regions)
    offered = [r for r in regions if not catalog.regions or r in catalog.regions]
    free = [r for r in offered if r not in taken]
    if not free:
        return (
            f"{account.name}: spread across regions: every region this group may use here "
            f"already holds one of its instances: {', '.join(offered) or 'none offered'}"
        )
    return Offer(account, free[0], size, image_id, load, headroom)


def spread_accounts(
    eligible: Iterable[GrantedAccount], request: Request, taken: frozenset[str]
) -> tuple[list[GrantedAccount], str | None]:
    """The accounts a launch spread across accounts may still use, and when there are none,
    the reason (which constraint, and which accounts hold the group's instances)."""
    eligible = list(eligible)
    if request.spread != "accounts":
        return eligible, None
    free = [a for a in eligible if a.id not in taken]
    if free or not eligible:
        return free, None
    held = ", ".join(sorted(a.name for a in eligible))
    return [], (
        f"spread across accounts: every account group {request.group!r} may use already holds "
        f"one of its instances: {held}"
    )


def rank(offers: Iterable[Offer]) -> list[Offer]:
    """Try order: cheapest (an unpriced size after every priced one), then least loaded
    (spread), then most headroom, then by name."""
    return sorted(
        offers,
        key=lambda o: (
            o.size.price_per_hour is None,
            o.size.price_per_hour or 0.0,
            o.load,
            -(o.headroom if o.headroom is not None else 10**9),
            o.account.name,
        ),
    )


def _at_price(price: float | None) -> str:
    return " (price unknown)" if price is None else f" at {price:g}/h"


def explain(chosen: Offer, tried: int, candidates: int) -> str:
    first = "first choice" if tried == 1 else f"choice {tried} (earlier ones failed)"
    return (
        f"{first} of {candidates}: {chosen.size.id}{_at_price(chosen.size.price_per_hour)} "
        f"on {chosen.account.name}"
    )
