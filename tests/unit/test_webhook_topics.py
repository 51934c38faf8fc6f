"""Topic patterns with RabbitMQ's topic syntax."""

import pytest

from shared.events import PUBLIC
from shared.webhooks.topics import matches, unmatched


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        ("instance.*", "instance.placed", True),
        ("instance.*", "instance.state_changed", True),
        ("instance.*", "quota.usage_changed", False),
        ("instance.*", "instance", False),
        ("*.placed", "instance.placed", True),
        ("#", "quota.usage_changed", True),
        ("instance.#", "instance.placed", True),
        ("instance.#", "instance", True),
        ("#.usage_changed", "quota.usage_changed", True),
        ("instance.placed", "instance.placed", True),
        ("instance.placed", "instance.failed", False),
        ("instance.placed.#", "instance.placed", True),
        ("instance.placed.*", "instance.placed", False),
    ],
)
def test_patterns_match_like_rabbitmq_bindings(pattern: str, topic: str, expected: bool) -> None:
    assert matches(pattern, topic) is expected


def test_patterns_that_match_no_public_topic_are_reported() -> None:
    public = [cls.TOPIC for cls in PUBLIC]
    assert unmatched(["instance.*", "quota.#", "#"], public) == []
    assert unmatched(["instance.placd", "instances.*", "quota.usage_changed"], public) == [
        "instance.placd",
        "instances.*",
    ]
