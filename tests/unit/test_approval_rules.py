"""The approval rule evaluator: each condition, conditions ANDed, rules ORed, an unknown price held;
and the rules' own validation (422 at the API)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.gateway.approvals import HeldLaunch, matching_rules, spoken_duration
from services.gateway.schemas import ApprovalRule, ApprovalRules

LAUNCH = HeldLaunch(
    owner="alice",
    cpus=4,
    memory_mb=8192,
    price_per_hour=0.5,
    accounts=(("id-1", "shared-aws"), ("id-2", "lab")),
)


def rule(name: str, **when: object) -> ApprovalRule:
    return ApprovalRule.model_validate({"name": name, "when": when})


@pytest.mark.parametrize(
    ("when", "held"),
    [
        ({"cpus_over": 3}, True),
        ({"cpus_over": 4}, False),  # strictly over
        ({"memory_mb_over": 8191}, True),
        ({"memory_mb_over": 8192}, False),
        ({"cost_per_hour_over": 0.49}, True),
        ({"cost_per_hour_over": 0.5}, False),
        ({"accounts": ["lab"]}, True),  # by name
        ({"accounts": ["id-1"]}, True),  # by id
        ({"accounts": ["elsewhere"]}, False),
        ({"owners": ["alice", "bob"]}, True),
        ({"owners": ["bob"]}, False),
        ({"cpus_over": 3, "owners": ["alice"]}, True),
        ({"cpus_over": 3, "owners": ["bob"]}, False),  # ANDed
    ],
)
def test_each_condition(when: dict, held: bool) -> None:
    assert matching_rules([rule("r", **when)], LAUNCH) == (["r"] if held else [])


def test_rules_are_ored_and_named_in_their_order() -> None:
    rules = [rule("big", cpus_over=2), rule("small", cpus_over=64), rule("mine", owners=["alice"])]
    assert matching_rules(rules, LAUNCH) == ["big", "mine"]
    assert matching_rules([], LAUNCH) == []


def test_an_unknown_price_is_held_by_a_price_rule_only() -> None:
    unpriced = HeldLaunch("alice", 1, 512, None, (("id-1", "shared-aws"),))
    assert matching_rules([rule("costly", cost_per_hour_over=100)], unpriced) == ["costly"]
    assert matching_rules([rule("big", cpus_over=1)], unpriced) == []


def test_a_launch_no_account_takes_matches_no_account_rule() -> None:
    nowhere = HeldLaunch("alice", 1, 512, 0.0, ())
    assert matching_rules([rule("lab", accounts=["lab"])], nowhere) == []


@pytest.mark.parametrize(
    "bad",
    [
        {"rules": [{"name": "r", "when": {}}]},  # no condition at all
        {
            "rules": [
                {"name": "r", "when": {"cpus_over": 1}},
                {"name": "r", "when": {"cpus_over": 2}},
            ]
        },
        {"rules": [{"name": "r", "when": {"accounts": []}}]},
        {"rules": [{"name": "r", "when": {"cpus_over": -1}}]},
        {"rules": [{"name": "r", "when": {"cost_per_hour_over": float("inf")}}]},
        {"rules": [{"name": "r", "when": {"colour": "red"}}]},
        {"rules": [{"name": "", "when": {"cpus_over": 1}}]},
        {"rules": [{"name": "r", "when": {"owners": ["Not A User"]}}]},
    ],
)
def test_bad_rules_are_refused(bad: dict) -> None:
    with pytest.raises(ValidationError):
        ApprovalRules.model_validate(bad)


@pytest.mark.parametrize(
    ("seconds", "spoken"), [(86400, "24 h"), (5400, "90 min"), (2.5, "2.5 s"), (61, "61 s")]
)
def test_timeouts_as_people_say_them(seconds: float, spoken: str) -> None:
    assert spoken_duration(seconds) == spoken
