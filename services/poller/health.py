"""When the poller reports an account's health, and how a failed poll is told. Pure.

The gateway shows admins each account's health from ``provider_account.health_reported``. A
failure is reported every time (backoff already spaces failed polls out), and so is the first
success after failures; otherwise a success is reported at most every
:data:`HEALTH_REPORT_SECONDS`, so ``last_poll_at`` stays fresh without an event per poll.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime, timedelta

from shared.redaction import REDACTED, redact_values_in

# Seconds between two reports of an account whose polls keep succeeding.
HEALTH_REPORT_SECONDS = 60.0
# Characters of an error's message kept, after redaction.
MAX_MESSAGE = 300

# A path with a query string and no scheme before it, as HTTP libraries name the URL they
# failed on ("Max retries exceeded with url: /v1/nodes?Signature=..."): the query is cut.
_PATH_QUERY = re.compile(r"""((?:^|(?<=[\s(='"]))/[^\s?#"'<>]*)\?[^\s#"'<>]*""")


def health_due(
    *,
    failed: bool,
    failures_before: int,
    reported_at: datetime | None,
    now: datetime,
    every: float = HEALTH_REPORT_SECONDS,
) -> bool:
    """Whether this poll's outcome is to be reported: a failure, the success that ends a run of
    them, the first poll ever reported, or a success ``every`` seconds after the last report."""
    if failed or failures_before > 0 or reported_at is None:
        return True
    return now - reported_at >= timedelta(seconds=every)


def describe_failure(error: BaseException, secrets: Iterable[str] = ()) -> str:
    """``Type: message``, as a person reads it in the API and the logs, with every credential
    value of the account and the query string of every URL or path replaced (``redacted``),
    before it is cut to length (so no part of a secret is left)."""
    message = redact_values_in(str(error).strip(), secrets)
    message = _PATH_QUERY.sub(lambda m: f"{m.group(1)}?{REDACTED}", message)
    name = type(error).__name__
    return f"{name}: {message[:MAX_MESSAGE]}" if message else name
