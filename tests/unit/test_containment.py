"""A claimed piece of work fails alone: a lost database is a warning, anything else a crash
logged with its traceback, and neither reaches the loop."""

from __future__ import annotations

import asyncpg
import pytest

from shared.containment import failing_alone


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def warning(self, event: str, **_: object) -> None:
        self.lines.append(("warning", event))

    def exception(self, event: str, **_: object) -> None:
        self.lines.append(("exception", event))


@pytest.mark.parametrize(
    ("error", "logged"),
    [
        (ConnectionResetError(), ("warning", "not_recorded")),
        (asyncpg.InterfaceError("pool closed"), ("warning", "not_recorded")),
        (KeyError("bug"), ("exception", "crashed")),
    ],
)
def test_a_failure_is_logged_by_its_kind_and_goes_no_further(
    error: Exception, logged: tuple[str, str]
) -> None:
    log = Log()
    with failing_alone(log, not_recorded="not_recorded", crashed="crashed"):
        raise error
    assert log.lines == [logged]


def test_work_that_succeeds_logs_nothing() -> None:
    log = Log()
    with failing_alone(log, not_recorded="not_recorded", crashed="crashed"):
        pass
    assert log.lines == []
