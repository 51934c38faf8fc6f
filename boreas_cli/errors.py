"""Exit codes (documented in docs/cli.md) and the failure that carries one to the user."""

from __future__ import annotations

import enum
from typing import Any


class ExitCode(enum.IntEnum):
    OK = 0
    FAILURE = 1  # anything else: a refusal (400, 422, 429), a server error, a watch that failed
    USAGE = 2  # the command line itself is wrong (what click reports)
    NOT_LOGGED_IN = 3  # no token, or the server refused it (401)
    NOT_FOUND = 4  # 404, and 403: not there, or not for you
    CONFLICT = 5  # 409: not possible in the current state
    UNREACHABLE = 6  # no answer from the gateway
    INTERRUPTED = 130  # Ctrl-C, as shells report it


class CliError(Exception):
    """What went wrong, in the words the user sees, and the exit code it ends with."""

    def __init__(self, message: str, code: ExitCode = ExitCode.FAILURE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def exit_code_for(status: int) -> ExitCode:
    if status == 401:
        return ExitCode.NOT_LOGGED_IN
    if status in (403, 404):
        return ExitCode.NOT_FOUND
    if status == 409:
        return ExitCode.CONFLICT
    return ExitCode.FAILURE


def problem_message(status: int, body: Any, reason: str) -> str:
    """``title: detail`` of an RFC 9457 problem, each field error on a line of its own."""
    if not isinstance(body, dict):
        return f"{status} {reason}".strip()
    title = body.get("title") or reason or str(status)
    detail = body.get("detail")
    message = f"{title}: {detail}" if detail else str(title)
    errors = _field_errors(body)
    if len(errors) > 1:  # the detail names the first only
        message = f"{title}:" + "".join(f"\n  {_field_error(e)}" for e in errors)
    elif errors and _field_error(errors[0]) not in message:  # said otherwise: say where too
        message += f"\n  {_field_error(errors[0])}"
    if status == 401:
        message += "\nLog in with `boreas login` (or set BOREAS_TOKEN)."
    return message


def _field_errors(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in body.get("errors") or [] if isinstance(e, dict)]


def _field_error(error: dict[str, Any]) -> str:
    """``where: what`` of one validation error: its JSON Pointer (a template's problems), or
    its ``loc`` path joined by dots (a request the gateway's schema refused)."""
    if "pointer" in error:
        return f"{error['pointer'] or '/'}: {error.get('message', '')}"
    return f"{'.'.join(str(part) for part in error.get('loc', []))}: {error.get('msg', '')}"


def not_logged_in() -> CliError:
    return CliError(
        "Not logged in: run `boreas login` (or set BOREAS_TOKEN).", ExitCode.NOT_LOGGED_IN
    )
