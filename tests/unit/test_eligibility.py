"""Which accounts fit a launch's placement: the one rule the gateway's pre-check and the
scheduler's placement share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shared.eligibility import declared_regions, eligible, fits, is_named, is_on, offers_region


@dataclass(frozen=True)
class Acct:
    id: str
    name: str
    provider: str = "simulator"
    config: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Wanted:
    provider: str | None = None
    account: str | None = None
    region: str | None = None


SIM = Acct("id-sim", "sim", config={"regions": ["north"]})
EC2 = Acct("id-ec2", "ec2", provider="ec2", config={"regions": ["eu-west-1"]})
ANYWHERE = Acct("id-any", "any")


def test_an_open_placement_fits_every_account() -> None:
    assert eligible([SIM, EC2, ANYWHERE], Wanted()) == [SIM, EC2, ANYWHERE]


def test_an_account_is_named_by_its_id_or_its_name() -> None:
    assert is_named(EC2, "ec2") and is_named(EC2, "id-ec2") and is_named(EC2, None)
    assert not is_named(EC2, "sim")
    assert eligible([SIM, EC2, ANYWHERE], Wanted(account="id-ec2")) == [EC2]


def test_the_provider_must_match_when_named() -> None:
    assert is_on(EC2, "ec2") and is_on(EC2, None) and not is_on(SIM, "ec2")
    assert eligible([SIM, EC2, ANYWHERE], Wanted(provider="ec2")) == [EC2]


def test_an_account_offers_the_regions_it_declares_and_one_declaring_none_may_offer_any() -> None:
    assert eligible([SIM, EC2, ANYWHERE], Wanted(region="north")) == [SIM, ANYWHERE]
    assert offers_region(SIM, None)


def test_only_a_list_declares_regions() -> None:
    assert declared_regions({"regions": ["a", "b"]}) == ("a", "b")
    assert declared_regions({"regions": []}) == ()
    assert declared_regions({}) is None
    assert declared_regions({"regions": "north"}) is None  # not a list: declares nothing
    assert offers_region(Acct("x", "x", config={"regions": "north"}), "south")
    assert not offers_region(Acct("x", "x", config={"regions": []}), "north")


def test_every_part_of_the_placement_must_fit() -> None:
    assert fits(SIM, Wanted(provider="simulator", account="sim", region="north"))
    assert not fits(SIM, Wanted(provider="simulator", account="sim", region="south"))
    assert not fits(SIM, Wanted(provider="ec2", account="sim", region="north"))
