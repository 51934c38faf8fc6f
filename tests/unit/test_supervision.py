"""Background loops cannot die silently: a failed loop is restarted (and reported failing while
it waits), an outage never ends the process, and a loop that keeps failing ends it."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from shared import runtime as runtime_module
from shared.config import ServiceSettings
from shared.runtime import ServiceRuntime
from shared.testing import wait_until


@pytest.fixture(autouse=True)
def quick_restarts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime_module, "LOOP_RESTART_FIRST", 0.001)
    monkeypatch.setattr(runtime_module, "LOOP_RESTART_MAX", 0.002)


def runtime() -> ServiceRuntime:
    return ServiceRuntime("unit", ServiceSettings(), [])


class FailsAtFirst:
    """A loop that raises ``error`` on each of its first ``failures`` starts, then runs until it is
    cancelled (``running`` set)."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures, self.error = failures, error
        self.starts = 0
        self.running = asyncio.Event()

    async def __call__(self) -> None:
        self.starts += 1
        if self.starts <= self.failures:
            raise self.error
        self.running.set()
        await asyncio.Event().wait()


async def test_a_loop_that_fails_once_is_started_again() -> None:
    rt = runtime()
    flaky = FailsAtFirst(1, ValueError("a bug on the first run"))
    task = asyncio.create_task(rt._supervise("flaky", flaky))
    await asyncio.wait_for(flaky.running.wait(), 5)
    assert flaky.starts == 2 and not rt.fatal.is_set() and rt.failing == set()
    task.cancel()


async def test_a_loop_is_reported_failing_while_it_waits_to_be_restarted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runtime_module, "LOOP_RESTART_FIRST", 60.0)
    monkeypatch.setattr(runtime_module, "LOOP_RESTART_MAX", 60.0)
    rt = runtime()
    failed = asyncio.Event()

    async def broken() -> None:
        failed.set()
        raise ValueError("broken")

    task = asyncio.create_task(rt._supervise("polling", broken))
    await asyncio.wait_for(failed.wait(), 5)
    await wait_until(lambda: rt.failing == {"polling"}, timeout=5, what="reported failing")
    assert not rt.fatal.is_set()
    task.cancel()


async def test_a_loop_that_keeps_failing_makes_the_process_exit() -> None:
    rt = runtime()

    async def always_broken() -> None:
        raise ValueError("broken for good")

    await asyncio.wait_for(rt._supervise("polling", always_broken), 5)
    assert rt.fatal.is_set() and rt.failing == {"polling"}


async def test_a_lost_connection_never_ends_the_process() -> None:
    rt = runtime()
    outage = FailsAtFirst(
        2 * runtime_module.LOOP_GIVE_UP_AFTER,
        asyncpg.exceptions.InternalClientError(
            "cannot switch to state 15; another operation (2) is in progress"
        ),
    )
    task = asyncio.create_task(rt._supervise("polling", outage))
    await asyncio.wait_for(outage.running.wait(), 5)
    assert not rt.fatal.is_set()
    task.cancel()
