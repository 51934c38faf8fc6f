"""Events register themselves: the catalog is every class of shared.events that names a topic."""

from __future__ import annotations

import inspect
import re

import pytest

from shared import events
from shared.events import CATALOG, Audience, Event, InstanceEvent


def test_the_catalog_is_every_class_of_the_module_that_names_a_topic_in_the_order_written() -> None:
    written = [
        cls
        for _, cls in inspect.getmembers(events, inspect.isclass)
        if issubclass(cls, Event) and "TOPIC" in cls.__dict__
    ]
    assert set(CATALOG) == set(written)
    lines = [inspect.getsourcelines(cls)[1] for cls in CATALOG]
    assert lines == sorted(lines)


def test_a_second_class_naming_a_taken_topic_is_refused() -> None:
    with pytest.raises(TypeError, match=re.escape("both name topic 'instance.placed'")):
        type(
            "AnotherPlaced",
            (Event,),
            {
                "__module__": events.__name__,
                "TOPIC": "instance.placed",
                "AUDIENCE": Audience.PUBLIC,
                "VERSION": "1.0",
            },
        )


def test_an_instance_event_names_its_instance_as_the_subject() -> None:
    instance_events = [cls for cls in CATALOG if issubclass(cls, InstanceEvent)]
    assert {cls.TOPIC for cls in instance_events} >= {
        "instance.placed",
        "instance.rejected",
        "instance.state_changed",
    }
    for cls in instance_events:
        assert cls.SUBJECT_FIELD == "instance_id"
        assert list(cls.model_fields)[:2] == ["instance_id", "owner"]
