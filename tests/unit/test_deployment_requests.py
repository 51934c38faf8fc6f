"""The gateway's pure handling of deployment requests: reading JSON and YAML bodies, problems at
pointers from the body's root, the template as events carry it, members' names, and spread."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from services.gateway.deployment_requests import (
    BodyUnreadable,
    document_of,
    member_name,
    read_document,
    request_of,
    spread_refusal,
    template_of,
)
from services.gateway.problems import FieldsRefused
from shared import templates
from shared.templates import Group, PlacementSpec

WEB = {"name": "web", "count": 2, "image": "nginx-{{ v }}", "cpus": 1, "memory_mb": 512}
BODY: dict[str, Any] = {
    "name": "shop",
    "template": {"groups": [WEB], "on_failure": "keep"},
    "parameters": {"v": 1.25},
}


def problems_of(body: Any) -> list[tuple[str, str]]:
    with pytest.raises(FieldsRefused) as refused:
        template_of(request_of(body))
    return [(p.pointer, p.message) for p in refused.value.problems]


def test_json_and_yaml_read_alike() -> None:
    as_json = read_document(b'{"name": "shop", "template": {"groups": []}}', None)
    as_yaml = read_document(b"name: shop\ntemplate:\n  groups: []\n", "application/yaml")
    also_yaml = read_document(b"name: shop\ntemplate: {groups: []}", "text/yaml; charset=utf-8")
    assert as_json == as_yaml == also_yaml == {"name": "shop", "template": {"groups": []}}


@pytest.mark.parametrize(
    ("raw", "media", "says"),
    [
        (b"{", "application/json", "not valid JSON"),
        (b'{"a": NaN}', "application/json", "not valid JSON"),
        (b"a: [", "application/yaml", "not valid YAML"),
        (b"a: &x [1]\nb: *x", "application/yaml", "aliases"),
        (b"a: !!python/object:os.system {}", "application/yaml", "not valid YAML"),
        (b"\xff\xfe", "application/json", "not UTF-8"),
    ],
)
def test_unreadable_bodies_say_why(raw: bytes, media: str, says: str) -> None:
    with pytest.raises(BodyUnreadable, match=says):
        read_document(raw, media)


def test_a_good_request_gives_its_template() -> None:
    template = template_of(request_of(BODY))
    assert template.groups[0].image == "nginx-1.25"
    assert template.on_failure == "keep"


def test_problems_point_from_the_body_root() -> None:
    assert problems_of({**BODY, "extra": 1}) == [("/extra", "unknown field")]
    assert problems_of({**BODY, "name": "Shop!"})[0][0] == "/name"
    assert problems_of({**BODY, "template": [1]})[0][0] == "/template"
    assert problems_of([]) == [("", 'the body is an object: {"name", "template", "parameters"?}')]
    unused = {**BODY, "parameters": {"v": 1, "w": 2}}
    assert problems_of(unused) == [("/parameters/w", "not used by the template")]
    assert problems_of({**BODY, "parameters": {"v": float("inf")}}) == [
        ("/parameters/v", "a number must be finite")
    ]
    cycle = {
        **BODY,
        "template": {
            "groups": [{**WEB, "after": ["db"]}, {**WEB, "name": "db", "after": ["web"]}],
        },
    }
    ((where, message),) = problems_of(cycle)
    assert where == "/template/groups/0/after/0"
    assert "web → db → web" in message
    # A field of the template named "parameters" is the template's, not the request's.
    stray = {**BODY, "template": {**BODY["template"], "parameters": {}}}
    assert problems_of(stray) == [("/template/parameters", "unknown field")]


def test_the_document_parses_back_to_the_same_template() -> None:
    template = templates.parse(
        {
            "groups": [
                {"name": "db", "count": 1, "image": "pg", "cpus": 2, "memory_mb": 2048},
                {
                    "name": "web",
                    "count": 3,
                    "image": "nginx",
                    "cpus": 1,
                    "memory_mb": 512,
                    "placement": {"provider": "simulator", "region": "north"},
                    "spread": "accounts",
                    "after": ["db"],
                    "lease_seconds": 600,
                },
            ]
        }
    )
    document = document_of(template)
    assert templates.parse(document) == template
    assert document["groups"][0] == {
        "name": "db",
        "count": 1,
        "image": "pg",
        "cpus": 2,
        "memory_mb": 2048,
    }
    assert document["on_failure"] == "rollback"


def test_member_names_fit_a_dns_label() -> None:
    name = member_name("a" * 24, "b" * 30, 9_999_999)
    assert name == f"{'a' * 24}-{'b' * 30}-9999999"
    assert len(name) == 63


@dataclass(frozen=True)
class Account:
    id: str
    name: str
    provider: str = "simulator"
    config: dict[str, Any] = field(default_factory=dict)


def group(spread: str | None, region: str | None = None) -> Group:
    return Group(
        name="web",
        count=1,
        image="nginx",
        cpus=1,
        memory_mb=512,
        placement=PlacementSpec(region=region),
        spread=spread,  # type: ignore[arg-type]
    )


def test_spread_across_accounts_needs_as_many_accounts() -> None:
    two = [Account("a1", "sim-a"), Account("a2", "sim-b")]
    assert spread_refusal(group("accounts"), 2, two) is None
    refusal = spread_refusal(group("accounts"), 3, two)
    assert refusal == (
        "spread across accounts: 3 instances need 3 accounts, but only 2 granted to you fit "
        "the placement (sim-a, sim-b)"
    )
    assert spread_refusal(group(None), 5, two) is None


def test_spread_across_regions_counts_the_regions_offered() -> None:
    north_south = Account("a1", "sim-a", config={"regions": ["north", "south"]})
    south_east = Account("a2", "sim-b", config={"regions": ["south", "east"]})
    anywhere = Account("a3", "sim-c")
    assert spread_refusal(group("regions"), 3, [north_south, south_east]) is None
    refusal = spread_refusal(group("regions"), 4, [north_south, south_east])
    assert refusal is not None
    assert "offer only 3 (east, north, south)" in refusal
    # An account that declares no regions may offer any: only placement can tell.
    assert spread_refusal(group("regions"), 9, [north_south, anywhere]) is None
    # A placement in one region has one region to spread over.
    pinned = spread_refusal(group("regions", region="south"), 2, [north_south, anywhere])
    assert pinned is not None
    assert "offer only 1 (south)" in pinned
