"""One claimed piece of a loop's work (a cloud call, an account's poll) fails alone.

The loops that lease work and run each piece as a task of its own (the scheduler's cloud worker,
the poller) treat a failure the same way: a lost database means the outcome was not recorded,
and the piece is taken again once its lease or interval runs out, so it is a warning; anything
else is logged with its traceback. Neither reaches the loop, which goes on with the rest.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from shared.db import TRANSIENT_DB_ERRORS


@contextlib.contextmanager
def failing_alone(log: Any, *, not_recorded: str, crashed: str) -> Iterator[None]:
    """Log a failure inside as ``not_recorded`` (database lost) or ``crashed`` (anything else),
    and swallow it."""
    try:
        yield
    except TRANSIENT_DB_ERRORS as exc:
        log.warning(not_recorded, error=repr(exc))
    except Exception:
        log.exception(crashed)
