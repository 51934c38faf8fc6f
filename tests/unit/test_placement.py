"""Placement filters and weighers, with no I/O."""

from typing import Any

from services.scheduler.placement import (
    Catalog,
    GrantedAccount,
    Offer,
    Request,
    Size,
    eligible_accounts,
    explain,
    offer_for,
    rank,
    resolve_image,
)
from shared.events import SealedSecret
from shared.pricing import cheapest_fit

SMALL = Size("small", 1, 1024, 0.01)
MEDIUM = Size("medium", 2, 4096, 0.04)
LARGE = Size("large", 4, 16384, 0.16)
CATALOG = Catalog((LARGE, SMALL, MEDIUM), {"debian-12": "img-deb"}, ("north", "south"))


SEALED = SealedSecret(key_id="k", nonce="bm9uY2U=", ciphertext="c2VjcmV0")


def account(name: str, grants=("alice",), provider="simulator", **config) -> GrantedAccount:
    return GrantedAccount(f"id-{name}", name, provider, config, SEALED, 1, frozenset(grants))


def request(**overrides) -> Request:
    values: dict[str, Any] = {"owner": "alice", "image": "debian-12", "cpus": 2, "memory_mb": 2048}
    values.update(overrides)
    return Request(**values)


def test_only_granted_accounts_are_eligible() -> None:
    mine, everyones, bobs = account("a"), account("b", grants=("*",)), account("c", grants=("bob",))
    assert eligible_accounts([mine, everyones, bobs], request()) == [mine, everyones]


def test_placement_constraints_filter_accounts() -> None:
    sim = account("sim", regions=["north"])
    ec2 = account("ec2", provider="ec2", regions=["eu-west-1"])
    anywhere = account("any")
    accounts = [sim, ec2, anywhere]
    assert eligible_accounts(accounts, request(provider="ec2")) == [ec2]
    assert eligible_accounts(accounts, request(account="sim")) == [sim]
    assert eligible_accounts(accounts, request(account="id-ec2")) == [ec2]
    assert eligible_accounts(accounts, request(region="north")) == [sim, anywhere]


def test_cheapest_size_that_fits() -> None:
    assert cheapest_fit(CATALOG.sizes, 2, 2048) == MEDIUM
    assert cheapest_fit(CATALOG.sizes, 1, 512) == SMALL
    assert cheapest_fit(CATALOG.sizes, 2, 8192) == LARGE
    assert cheapest_fit(CATALOG.sizes, 64, 1024) is None


def test_image_names_resolve_through_mapping_then_catalog() -> None:
    mapped = account("m", images={"debian-12": "ami-123"})
    assert resolve_image("debian-12", CATALOG, mapped) == "ami-123"
    assert resolve_image("debian-12", CATALOG, account("plain")) == "img-deb"
    assert resolve_image("img-deb", CATALOG, account("plain")) == "img-deb"
    assert resolve_image("windows", CATALOG, account("plain")) is None


def test_offer_or_the_reason_there_is_none() -> None:
    acct = account("a", regions=["north"])
    offer = offer_for(acct, CATALOG, request(), load=0, headroom=None)
    assert isinstance(offer, Offer)
    assert (offer.size, offer.image_id, offer.region) == (MEDIUM, "img-deb", "north")
    assert offer_for(acct, CATALOG, request(cpus=64), load=0, headroom=None) == (
        "a: no size with 64 cpus and 2048 MB"
    )
    assert offer_for(acct, CATALOG, request(image="x"), load=0, headroom=None) == "a: no image 'x'"
    assert offer_for(acct, CATALOG, request(), load=0, headroom=0) == "a: no headroom left"
    assert offer_for(acct, CATALOG, request(region="west"), load=0, headroom=None) == (
        "a: no region 'west'"
    )


def test_rank_prefers_cheaper_then_emptier_then_roomier() -> None:
    def offer(name: str, price: float, load: int, headroom: int | None) -> Offer:
        return Offer(account(name), None, Size("s", 2, 4096, price), "img", load, headroom)

    pricey = offer("pricey", 0.10, 0, None)
    busy = offer("busy", 0.04, 9, None)
    quiet_small = offer("quiet-small", 0.04, 1, 3)
    quiet_big = offer("quiet-big", 0.04, 1, 50)
    ordered = rank([pricey, busy, quiet_small, quiet_big])
    assert [o.account.name for o in ordered] == ["quiet-big", "quiet-small", "busy", "pricey"]


def test_an_unpriced_size_comes_after_every_priced_one() -> None:
    unpriced = Size("mystery", 2, 4096, None)
    dear = Size("dear", 8, 32768, 5.0)
    assert cheapest_fit((unpriced, dear), 2, 2048) == dear
    assert cheapest_fit((unpriced,), 2, 2048) == unpriced


def test_rank_puts_unpriced_offers_after_priced_ones() -> None:
    def offer(name: str, price: float | None, load: int = 0) -> Offer:
        return Offer(account(name), None, Size("s", 2, 4096, price), "img", load, None)

    ordered = rank([offer("unknown", None), offer("dear", 9.0, 5), offer("free", 0.0, 7)])
    assert [o.account.name for o in ordered] == ["free", "dear", "unknown"]


def test_a_size_dearer_than_the_admitted_price_is_no_offer() -> None:
    acct = account("a")
    reason = offer_for(acct, CATALOG, request(price_per_hour=0.03), load=0, headroom=None)
    assert reason == "a: medium costs 0.04/h, more than the 0.03/h the launch was admitted at"
    # At the admitted price, or with none known, the offer stands.
    for ceiling in (0.04, 0.5, None):
        offer = offer_for(acct, CATALOG, request(price_per_hour=ceiling), load=0, headroom=None)
        assert isinstance(offer, Offer) and offer.size == MEDIUM
    # A size whose price is unknown cannot be said to cost more.
    unpriced = Catalog((Size("u", 2, 4096, None),), CATALOG.images, CATALOG.regions)
    offer = offer_for(acct, unpriced, request(price_per_hour=0.01), load=0, headroom=None)
    assert isinstance(offer, Offer)


def test_explanations_say_why() -> None:
    chosen = Offer(account("team"), "north", MEDIUM, "img", 3, None)
    assert explain(chosen, 1, 2) == "first choice of 2: medium at 0.04/h on team"
    # How many instances others have there is not the launching user's business.
    assert "3" not in explain(chosen, 1, 2)
    assert explain(chosen, 2, 2).startswith("choice 2 (earlier ones failed) of 2")
    unpriced = Offer(account("team"), "north", Size("odd", 2, 4096, None), "img", 0, None)
    assert explain(unpriced, 1, 1) == "first choice of 1: odd (price unknown) on team"
