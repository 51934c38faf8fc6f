"""Asking the person at the terminal: passwords (hidden) and confirmations."""

from __future__ import annotations

import sys

import typer

from boreas_cli.errors import CliError, ExitCode


def password(*, from_stdin: bool, confirm: bool = False, label: str = "Password") -> str:
    """From the first line of stdin (--password-stdin), else a prompt that does not echo."""
    if from_stdin:
        given = sys.stdin.readline().rstrip("\r\n")
        if not given:
            raise CliError("--password-stdin: stdin held no password.", ExitCode.USAGE)
        return given
    answer: str = typer.prompt(label, hide_input=True, confirmation_prompt=confirm, err=True)
    return answer


def confirmed(question: str, yes: bool) -> None:
    """Go on if ``yes`` (--yes) or the person says so; a script must say --yes."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise CliError(f"{question} Say --yes to do it without a terminal.", ExitCode.USAGE)
    if not typer.confirm(question, default=False, err=True):
        raise CliError("Nothing done.", ExitCode.FAILURE)
