"""The documentation of the event catalog is generated from the code and must match it."""

from pathlib import Path

from shared.catalog import BEGIN, END, render

EVENTS_DOC = Path(__file__).resolve().parents[2] / "docs" / "events.md"


def test_events_doc_lists_the_catalog_as_the_code_defines_it() -> None:
    text = EVENTS_DOC.read_text()
    start, end = text.index(BEGIN), text.index(END) + len(END)
    assert text[start:end] == render(), (
        "docs/events.md is out of date: replace its catalog section with `python -m shared.catalog`"
    )
