"""Every example template in docs/examples is a template: it parses with shared.templates.parse
with the parameters docs/deployments.md gives it (in a `boreas deployments create -f
docs/examples/<file> --param ...` command), and every one of those commands names an example
that exists."""

from __future__ import annotations

import itertools
import shlex
from pathlib import Path

import pytest
import yaml

from boreas_cli.templates import parameters_of
from shared.templates import parse

DOCS = Path(__file__).resolve().parents[2] / "docs"
EXAMPLES = sorted((DOCS / "examples").glob("*.yaml"))


def create_commands() -> list[list[str]]:
    """The arguments of each `boreas deployments create` in docs/deployments.md (a command
    continued with a backslash is read as one line)."""
    text = (DOCS / "deployments.md").read_text().replace("\\\n", " ")
    commands = []
    for line in text.splitlines():
        if "boreas deployments create" not in line:
            continue
        words = shlex.split(line.strip().removeprefix("$ "), comments=True)
        if words[:3] == ["boreas", "deployments", "create"]:
            commands.append(words[3:])
    return commands


def file_and_parameters(arguments: list[str]) -> tuple[str, dict[str, str]]:
    file, given = "", []
    for option, value in itertools.pairwise(arguments):
        if option in ("-f", "--file"):
            file = value
        elif option in ("-p", "--param"):
            given.append(value)
    return file, parameters_of(given)


def test_there_are_two_worked_examples_one_of_them_web_servers_and_a_database() -> None:
    assert len(EXAMPLES) >= 2
    names = {path.name for path in EXAMPLES}
    assert "web-and-db.yaml" in names


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_each_example_parses_with_the_parameters_the_doc_gives(example: Path) -> None:
    given = [
        file_and_parameters(c)
        for c in create_commands()
        if file_and_parameters(c)[0] == f"docs/examples/{example.name}"
    ]
    assert given, f"docs/deployments.md never creates {example.name}"
    for _, parameters in given:
        template = parse(yaml.safe_load(example.read_text()), parameters)
        assert template.groups


def test_every_example_the_doc_creates_exists() -> None:
    for command in create_commands():
        file, _ = file_and_parameters(command)
        if file.startswith("docs/examples/"):
            assert (DOCS.parent / file).is_file(), file


def test_the_web_and_db_example_spreads_web_servers_across_accounts_after_the_database() -> None:
    (command,) = [
        c for c in create_commands() if file_and_parameters(c)[0] == "docs/examples/web-and-db.yaml"
    ][:1]
    _, parameters = file_and_parameters(command)
    template = parse(
        yaml.safe_load((DOCS / "examples" / "web-and-db.yaml").read_text()), parameters
    )
    web, db = template.group("web"), template.group("db")
    assert (web.spread, web.after, web.count) == ("accounts", ("db",), 2)
    assert db.placement.account is not None
    assert template.start_order() == [["db"], ["web"]]
