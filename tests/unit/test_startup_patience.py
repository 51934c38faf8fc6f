"""A service waits for RabbitMQ and PostgreSQL at start, then gives up with the last error."""

from __future__ import annotations

import pytest
import structlog

from shared import runtime


async def test_a_dependency_that_comes_up_is_waited_for_and_each_wait_is_logged() -> None:
    tries: list[int] = []

    async def connect() -> str:
        tries.append(1)
        if len(tries) < 3:
            raise ConnectionRefusedError("not yet")
        return "connected"

    with structlog.testing.capture_logs() as logs:
        # As the runtime calls it: a lambda that returns the awaitable.
        assert await runtime._patiently("bus", lambda: connect()) == "connected"
    waits = [e for e in logs if e["event"] == "waiting_for_dependency"]
    assert len(tries) == 3
    assert [(e["dependency"], e["error"]) for e in waits] == [
        ("bus", "ConnectionRefusedError('not yet')")
    ] * 2


async def test_after_the_patience_the_last_error_is_raised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runtime, "STARTUP_PATIENCE", 0.0)

    async def never() -> None:
        raise ConnectionRefusedError("still down")

    with pytest.raises(ConnectionRefusedError, match="still down"):
        await runtime._patiently("database", never)
