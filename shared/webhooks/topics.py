"""Topic patterns of webhook subscriptions, with RabbitMQ's topic syntax.

A pattern is dot-separated words; ``*`` stands for exactly one word and ``#`` for zero or more:
``instance.*`` matches ``instance.placed``, ``#`` matches everything.
"""

from __future__ import annotations

from collections.abc import Iterable


def matches(pattern: str, topic: str) -> bool:
    return _match(pattern.split("."), topic.split("."))


def _match(pattern: list[str], words: list[str]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_match(rest, words[i:]) for i in range(len(words) + 1))
    if not words:
        return False
    return (head == "*" or head == words[0]) and _match(rest, words[1:])


def any_matches(patterns: Iterable[str], topic: str) -> bool:
    return any(matches(p, topic) for p in patterns)


def unmatched(patterns: Iterable[str], topics: Iterable[str]) -> list[str]:
    """The patterns that match none of ``topics`` (a typo, most likely)."""
    known = list(topics)
    return [p for p in patterns if not any(matches(p, t) for t in known)]
