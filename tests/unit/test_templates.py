"""Deployment templates: parameters, the schema, and the checks a schema cannot make, each
problem reported at the JSON Pointer of its field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from shared.templates import SCHEMA, Group, PlacementSpec, Problem, TemplateError, parse, pointer

SCHEMA_DOC = Path(__file__).resolve().parents[2] / "docs" / "deployment-template.schema.json"


def group(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "count": 1, "image": "debian", "cpus": 1, "memory_mb": 512, **fields}


def problems_of(document: Any, parameters: dict[str, Any] | None = None) -> list[Problem]:
    with pytest.raises(TemplateError) as refused:
        parse(document, parameters)
    return list(refused.value.problems)


def test_a_three_tier_template_parses_with_its_parameters() -> None:
    template = parse(
        {
            "groups": [
                group("web", count=3, spread="accounts", after=["app"]),
                group("db", image="postgres-{{ pg }}", placement={"account": "{{account}}"}),
                group("app", count=2, after=["db"], lease_seconds=3600),
            ],
            "on_failure": "keep",
        },
        {"pg": 16, "account": "sim-a"},
    )
    assert template.on_failure == "keep"
    assert template.group("db") == Group(
        "db", 1, "postgres-16", 1, 512, placement=PlacementSpec(account="sim-a")
    )
    assert template.group("web").spread == "accounts"
    assert template.group("app").lease_seconds == 3600
    assert template.start_order() == [["db"], ["app"], ["web"]]


def test_groups_that_wait_for_nothing_start_together() -> None:
    template = parse({"groups": [group("a"), group("b"), group("c", after=["a", "b"])]})
    assert template.on_failure == "rollback"
    assert template.start_order() == [["a", "b"], ["c"]]


def test_a_cycle_is_named_at_the_after_that_closes_it() -> None:
    [problem] = problems_of(
        {
            "groups": [
                group("db", after=["web"]),
                group("app", after=["db"]),
                group("web", after=["app"]),
            ]
        }
    )
    assert problem.pointer == "/groups/0/after/0"
    assert problem.message == "these groups wait for each other: db → web → app → db"


def test_a_group_waiting_for_itself_is_refused() -> None:
    assert problems_of({"groups": [group("db", after=["db"])]}) == [
        Problem("/groups/0/after/0", "group 'db' cannot wait for itself")
    ]


def test_an_unknown_group_in_after_is_refused_where_it_is_named() -> None:
    assert problems_of({"groups": [group("db"), group("web", after=["db", "cache"])]}) == [
        Problem("/groups/1/after/1", "no group named 'cache'")
    ]


def test_a_group_name_defined_twice_is_refused() -> None:
    assert problems_of({"groups": [group("db"), group("db")]}) == [
        Problem("/groups/1/name", "group 'db' is defined twice (first at /groups/0)")
    ]


def test_an_unknown_field_is_refused_where_it_is() -> None:
    assert problems_of({"groups": [group("db", flavor="large")], "outputs": {}}) == [
        Problem("/outputs", "unknown field"),
        Problem("/groups/0/flavor", "unknown field"),
    ]


def test_a_missing_parameter_is_refused_at_the_field_that_uses_it() -> None:
    assert problems_of({"groups": [group("db", image="postgres-{{ version }}")]}) == [
        Problem("/groups/0/image", "parameter 'version' is not given")
    ]


@pytest.mark.parametrize(
    ("parameters", "expected"),
    [
        ({"v": "16", "unused": "x"}, Problem("/parameters/unused", "not used by the template")),
        ({"v": ["16"]}, Problem("/parameters/v", "a parameter's value is a string or a number")),
        (
            {"v": "16", "a/b": "x"},
            Problem("/parameters/a~1b", "a parameter name is letters, digits and _"),
        ),
    ],
)
def test_bad_parameters_are_refused_at_their_name(
    parameters: dict[str, Any], expected: Problem
) -> None:
    problems = problems_of({"groups": [group("db", image="postgres-{{v}}")]}, parameters)
    assert expected in problems


def test_a_substituted_value_must_still_be_valid() -> None:
    [problem] = problems_of({"groups": [group("db", image="{{ image }}")]}, {"image": "bad image"})
    assert problem.pointer == "/groups/0/image"
    assert "does not match" in problem.message


def test_every_problem_is_reported_at_once() -> None:
    problems = problems_of({"groups": [group("db", count=0), group("Web", cpus="two")], "x": 1})
    assert {p.pointer for p in problems} == {
        "/x",
        "/groups/0/count",
        "/groups/1/name",
        "/groups/1/cpus",
    }


def test_pointers_escape_as_rfc_6901_says() -> None:
    assert pointer("a/b", "m~n", 0) == "/a~1b/m~0n/0"


def test_the_published_schema_is_the_one_the_code_checks_with() -> None:
    assert json.loads(SCHEMA_DOC.read_text()) == SCHEMA, (
        "docs/deployment-template.schema.json is out of date: "
        "python -m shared.templates > docs/deployment-template.schema.json"
    )
