"""The documentation must match the code: the event catalog is generated from it, and every
setting in shared/config.py has a row in docs/operations.md's configuration table."""

import re
from pathlib import Path

from pydantic_settings import BaseSettings

from shared import config
from shared.catalog import BEGIN, END, render

EVENTS_DOC = Path(__file__).resolve().parents[2] / "docs" / "events.md"


def test_events_doc_lists_the_catalog_as_the_code_defines_it() -> None:
    text = EVENTS_DOC.read_text()
    start, end = text.index(BEGIN), text.index(END) + len(END)
    assert text[start:end] == render(), (
        "docs/events.md is out of date: replace its catalog section with `python -m shared.catalog`"
    )


OPERATIONS_DOC = EVENTS_DOC.with_name("operations.md")


def _configuration_table() -> list[str]:
    """The rows of the one table under docs/operations.md's "## Configuration" heading: the
    lines from its first `|` line up to the first line that is not a row, since a blank line
    would end the table there when Markdown renders it."""
    section = OPERATIONS_DOC.read_text().split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    lines = section.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append(line)
    return rows


def _environment_variables() -> set[str]:
    settings = [
        cls
        for cls in vars(config).values()
        if isinstance(cls, type) and issubclass(cls, BaseSettings) and cls is not BaseSettings
    ]
    assert settings, "shared/config.py defines no settings classes"
    variables = set()
    for cls in settings:
        prefix = cls.model_config.get("env_prefix", "")
        variables.update(f"{prefix}{name}".upper() for name in cls.model_fields)
    return variables


def test_operations_doc_documents_every_setting() -> None:
    documented = {
        name for row in _configuration_table() for name in re.findall(r"`(BOREAS_\w+)`", row)
    }
    missing = sorted(_environment_variables() - documented)
    assert not missing, (
        "docs/operations.md's configuration table (one table, no blank lines in it) lacks "
        f"{', '.join(missing)}: add a row with the default and what it does"
    )
