"""The one way a background loop repeats its work: a step, a wait, the step again.

An outage costs a step, not the loop: when the step raises one of the ``transient`` errors (by
default, those a lost database raises) the loop logs one line naming itself and the cause, waits
a growing delay (capped), and tries again. Every other error propagates, to the supervisor of
:mod:`shared.runtime`, which restarts the loop and ends the process if it keeps failing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import structlog

from shared.db import TRANSIENT_DB_ERRORS

_log = structlog.get_logger(__name__)

# A step returns how long to wait before the next one (seconds), or None for the loop's interval.
Step = Callable[[], Awaitable[float | None]]
Wait = Callable[[float], Awaitable[object]]


@dataclass(frozen=True)
class Backoff:
    """The waits after failed steps in a row: ``first`` seconds, doubling, at most ``ceiling``."""

    first: float = 1.0
    ceiling: float = 30.0

    def delay(self, failures: int) -> float:
        return min(self.ceiling, self.first * 2 ** (failures - 1))


OUTAGE_BACKOFF = Backoff()


async def every(
    interval: float,
    step: Step,
    *,
    name: str,
    log: Any = None,
    event: str = "background_step_skipped",
    transient: tuple[type[BaseException], ...] = TRANSIENT_DB_ERRORS,
    backoff: Backoff = OUTAGE_BACKOFF,
    wait: Wait | None = None,
    sleep: Wait = asyncio.sleep,
) -> NoReturn:
    """Run ``step`` now and for ever: after each step wait what it returned, or ``interval``.

    ``wait`` (``sleep`` unless given) does the waiting between steps; a loop that may be woken
    early passes one that also ends on its wake-up. A ``transient`` error is logged as ``event``
    (a warning with ``loop=name``, the error and the delay before the retry) and the step is
    tried again after ``backoff``, slept in full: a wake-up does not shorten an outage's wait.
    Any other exception propagates; cancellation ends the loop."""
    wait = wait or sleep
    log = log or _log
    failures = 0
    while True:
        try:
            next_in = await step()
        except transient as exc:
            failures += 1
            delay = backoff.delay(failures)
            log.warning(event, loop=name, error=repr(exc), failures=failures, retry_in=delay)
            await sleep(delay)
            continue
        failures = 0
        await wait(interval if next_in is None else next_in)
