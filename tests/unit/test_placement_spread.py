"""Spread (anti-affinity) in placement, pure: which accounts or regions a deployment group's
launch may still take, and the reason, naming the constraint, when there are none."""

from services.scheduler.placement import Offer, offer_for, spread_accounts
from tests.unit.test_placement import CATALOG, account, request

DEPLOYMENT = "00000000-0000-4000-8000-0000000000d1"


def spread(how: str, **more: object):
    return request(deployment_id=DEPLOYMENT, group="web", spread=how, **more)


def test_an_account_another_member_holds_is_no_candidate() -> None:
    a, b, c = account("a"), account("b"), account("c")
    assert spread_accounts([a, b, c], spread("accounts"), frozenset({"id-a"})) == ([b, c], None)


def test_with_every_account_taken_the_reason_names_the_constraint_and_the_accounts() -> None:
    a, b = account("sim-b"), account("sim-a")
    usable, reason = spread_accounts(
        [a, b], spread("accounts"), frozenset({"id-sim-a", "id-sim-b"})
    )
    assert usable == []
    assert reason == (
        "spread across accounts: every account group 'web' may use already holds one of its "
        "instances: sim-a, sim-b"
    )


def test_a_launch_not_spread_across_accounts_keeps_every_account() -> None:
    a, b = account("a"), account("b")
    assert spread_accounts([a, b], request(), frozenset({"id-a"})) == ([a, b], None)
    assert spread_accounts([a, b], spread("regions"), frozenset({"id-a"})) == ([a, b], None)
    # No eligible account at all is placement's own reason, not spread's.
    assert spread_accounts([], spread("accounts"), frozenset()) == ([], None)


def test_spread_across_regions_takes_the_first_region_no_member_holds() -> None:
    acct = account("a", regions=["north", "south"])
    offer = offer_for(
        acct, CATALOG, spread("regions"), load=0, headroom=None, taken_regions=frozenset({"north"})
    )
    assert isinstance(offer, Offer) and offer.region == "south"
    none_left = offer_for(
        acct,
        CATALOG,
        spread("regions"),
        load=0,
        headroom=None,
        taken_regions=frozenset({"north", "south"}),
    )
    assert none_left == (
        "a: spread across regions: every region this group may use here already holds one of "
        "its instances: north, south"
    )


def test_the_place_a_launch_claims() -> None:
    assert spread("accounts").spread_place("id-a", "north") == "id-a"
    assert spread("regions").spread_place("id-a", "north") == "north"
    assert request().spread_place("id-a", "north") is None
