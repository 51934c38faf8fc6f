"""Durations as people write them (``90s``, ``30m``, ``2h``, ``1d``, ``1h30m``; a bare number
is seconds) to the seconds the API takes, and back."""

from __future__ import annotations

import re

from boreas_cli.errors import CliError, ExitCode

UNITS = {"d": 86_400, "h": 3_600, "m": 60, "s": 1}
_PART = re.compile(r"(\d+)([dhms])")
_WHOLE = re.compile(r"(?:\d+[dhms])+")
NONE_WORDS = ("none", "unlimited")


def seconds_of(value: str, option: str, *, zero: bool = False) -> int:
    """The seconds ``value`` stands for (0 only if ``zero``); a CliError (usage) naming
    ``option`` otherwise."""
    given = value.strip().lower()
    if given.isdigit():
        seconds = int(given)
    elif _WHOLE.fullmatch(given):
        seconds = sum(int(n) * UNITS[unit] for n, unit in _PART.findall(given))
    else:
        raise CliError(
            f"{option}: a duration such as 90s, 30m, 2h, 1d or 1h30m, not {value!r}.",
            ExitCode.USAGE,
        )
    if seconds == 0 and not zero:
        raise CliError(f"{option}: a duration longer than 0 s.", ExitCode.USAGE)
    return seconds


def optional_seconds_of(value: str, option: str) -> int | None:
    """As seconds_of, with ``none`` (or ``unlimited``) for no duration at all (null)."""
    return None if value.strip().lower() in NONE_WORDS else seconds_of(value, option)


def described(seconds: int | float | None) -> str:
    """``5400`` as ``1h30m``, ``604800`` as ``7d``; None as ``none``."""
    if seconds is None:
        return "none"
    left = int(seconds)
    if left <= 0:
        return f"{left}s"
    parts = []
    for unit, size in UNITS.items():
        count, left = divmod(left, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
