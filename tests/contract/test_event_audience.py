"""Every catalog event states who may read it, and every public one is in the published docs.

The audience decides the exchange an event travels on and whether external systems are promised
it; a default would let a new event become one or the other by omission.
"""

import json
from pathlib import Path

import pytest

from shared.events import CATALOG, PUBLIC, Audience, Event

ROOT = Path(__file__).resolve().parents[2]
EVENTS_DOC = ROOT / "docs" / "events.md"
ASYNCAPI_DOC = ROOT / "docs" / "asyncapi.json"


def _undocumented(classes: tuple[type[Event], ...], events_md: str, asyncapi: dict) -> list[str]:
    """The public topics missing a heading in events.md or a channel in asyncapi.json."""
    headings = {line for line in events_md.splitlines() if line.startswith("#")}
    addresses = {channel["address"] for channel in asyncapi["channels"].values()}
    missing = []
    for cls in classes:
        if not any(h.lstrip("#").strip().startswith(f"`{cls.TOPIC}`") for h in headings):
            missing.append(f"{cls.TOPIC}: no heading in docs/events.md")
        if cls.TOPIC not in addresses:
            missing.append(f"{cls.TOPIC}: no channel in docs/asyncapi.json")
    return missing


@pytest.mark.parametrize("cls", CATALOG, ids=lambda c: c.__name__)
def test_each_catalog_event_states_its_own_audience(cls: type[Event]) -> None:
    assert isinstance(vars(cls).get("AUDIENCE"), Audience), (
        f"{cls.__name__} must state AUDIENCE = Audience.PUBLIC or Audience.INTERNAL"
    )


def test_an_event_without_an_audience_is_refused() -> None:
    with pytest.raises(TypeError, match="ThrowawayEvent must state its AUDIENCE"):

        class ThrowawayEvent(Event):
            TOPIC = "throwaway.happened"
            VERSION = "1.0"


def test_an_audience_is_not_inherited_from_another_event() -> None:
    with pytest.raises(TypeError, match="ThrowawayFollower must state its AUDIENCE"):

        class ThrowawayFollower(PUBLIC[0]):  # type: ignore[misc, valid-type]
            pass


def test_an_audience_must_be_an_audience() -> None:
    with pytest.raises(TypeError, match="ThrowawayBoolean must state its AUDIENCE"):

        class ThrowawayBoolean(Event):
            TOPIC = "throwaway.happened"
            VERSION = "1.0"
            AUDIENCE = True  # type: ignore[assignment]


def test_every_public_event_is_in_events_md_and_asyncapi_json() -> None:
    missing = _undocumented(PUBLIC, EVENTS_DOC.read_text(), json.loads(ASYNCAPI_DOC.read_text()))
    assert missing == [], "regenerate the docs: python -m shared.catalog, python -m shared.asyncapi"


def test_an_undocumented_public_event_is_reported() -> None:
    class ThrowawayPublic(Event):
        TOPIC = "throwaway.published"
        AUDIENCE = Audience.PUBLIC
        VERSION = "1.0"

    missing = _undocumented(
        (*PUBLIC, ThrowawayPublic), EVENTS_DOC.read_text(), json.loads(ASYNCAPI_DOC.read_text())
    )
    assert missing == [
        "throwaway.published: no heading in docs/events.md",
        "throwaway.published: no channel in docs/asyncapi.json",
    ]
