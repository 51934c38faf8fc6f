"""Governance for admins: each user's lease policy (how long instances live, what happens at the
end) and the approval rules that hold launches until an admin answers."""

from __future__ import annotations

import enum
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml  # PyYAML: installed with uvicorn[standard]

from boreas_cli import context
from boreas_cli.client import Api
from boreas_cli.durations import described, optional_seconds_of, seconds_of
from boreas_cli.errors import CliError, ExitCode
from boreas_cli.output import (
    Column,
    Format,
    OutputOption,
    emit,
    emit_record,
    field,
    money,
    render_table,
    say,
)

lease_policies = typer.Typer(
    help="How long a user's instances live, and what happens at the end (admins set them).",
    no_args_is_help=True,
)
approval_rules = typer.Typer(
    help="Rules that hold matching launches until an admin approves or denies them (admins).",
    no_args_is_help=True,
)


class OnExpiry(enum.StrEnum):
    STOP = "stop"
    TERMINATE = "terminate"


# What a user without a policy of their own gets (the gateway's defaults).
NO_POLICY: dict[str, Any] = {
    "default_seconds": None,
    "max_seconds": None,
    "on_expiry": "stop",
    "warn_seconds": 300,
}
POLICY_FIELDS = tuple(NO_POLICY)

Username = Annotated[str, typer.Argument(help="A username.")]
DurationOption = Annotated[
    str | None,
    typer.Option(help="A duration (90s, 30m, 2h, 1d), or 'none'.", show_default=False),
]


def _maximum(policy: dict[str, Any]) -> str:
    found = policy.get("max_seconds")
    return "unlimited" if found is None else described(found)


def _show_policy(username: str, policy: dict[str, Any], output: Format) -> None:
    rows: list[Column] = [
        ("default", lambda p: described(p.get("default_seconds"))),
        ("max", _maximum),
        ("on_expiry", field("on_expiry")),
        ("warn", lambda p: described(p.get("warn_seconds"))),
    ]
    emit_record({"username": username, **policy}, output, [("username", field("username")), *rows])


def _policy_of(api: Api, username: str) -> dict[str, Any]:
    return dict(api.get(f"/v1/lease-policies/{username}"))


@lease_policies.command("show")
def show_lease_policy(
    username: Annotated[str | None, typer.Argument(help="Whose (default: yours).")] = None,
    output: OutputOption = Format.TABLE,
) -> None:
    """A user's lease policy: the default and longest lease, what happens at expiry, and how long
    before it the owner is warned."""
    api = context.api()
    username = username or str(api.get("/v1/users/me")["username"])
    _show_policy(username, _policy_of(api, username), output)


@lease_policies.command("set")
def set_lease_policy(
    username: Username,
    default: Annotated[
        str | None,
        typer.Option(
            "--default",
            help="The lease a launch gets unless it asks for one (90s, 30m, 2h, 1d), or 'none'.",
            show_default=False,
        ),
    ] = None,
    maximum: Annotated[
        str | None,
        typer.Option(
            "--max",
            help="The longest lease a launch may ask for, or be extended to from now; 'none': "
            "no maximum.",
            show_default=False,
        ),
    ] = None,
    on_expiry: Annotated[
        OnExpiry | None,
        typer.Option(help="What happens to an instance whose lease ends.", show_default=False),
    ] = None,
    warn: Annotated[
        str | None,
        typer.Option(
            help="How long before the end instance.lease_expiring is sent (0: no warning ahead).",
            show_default=False,
        ),
    ] = None,
    output: OutputOption = Format.TABLE,
) -> None:
    """Set a user's lease policy (admins); what is not given stays as it is."""
    api = context.api()
    try:
        current = _policy_of(api, username)
    except CliError as refused:
        if refused.code is not ExitCode.NOT_FOUND:
            raise
        current = dict(NO_POLICY)  # the PUT says whether the user exists
    body = {name: current.get(name, NO_POLICY[name]) for name in POLICY_FIELDS}
    if default is not None:
        body["default_seconds"] = optional_seconds_of(default, "--default")
    if maximum is not None:
        body["max_seconds"] = optional_seconds_of(maximum, "--max")
    if on_expiry is not None:
        body["on_expiry"] = on_expiry.value
    if warn is not None:
        body["warn_seconds"] = seconds_of(warn, "--warn", zero=True)
    _show_policy(username, api.put(f"/v1/lease-policies/{username}", body), output)


# -- approval rules -------------------------------------------------------------------------------

# How each condition of a rule reads, in the order shown.
CONDITIONS = (
    ("cpus_over", lambda v: f"cpus > {v}"),
    ("memory_mb_over", lambda v: f"memory_mb > {v}"),
    ("cost_per_hour_over", lambda v: f"price/h > {money(v)} (or unknown)"),
    ("accounts", lambda v: f"account in {', '.join(map(str, v))}"),
    ("owners", lambda v: f"owner in {', '.join(map(str, v))}"),
)


def conditions(rule: dict[str, Any]) -> str:
    """A rule's conditions, all of which a launch must meet for it to match."""
    when = rule.get("when") or {}
    known = [show(when[key]) for key, show in CONDITIONS if when.get(key) is not None]
    others = [
        f"{key} {value}"
        for key, value in when.items()
        if key not in dict(CONDITIONS) and value is not None
    ]
    return " and ".join(known + others) or "every launch"


def _show_rules(answer: dict[str, Any], output: Format) -> None:
    rules = list(answer.get("rules") or [])
    emit(
        answer,
        output,
        lambda: render_table(rules, [("NAME", field("name")), ("HOLDS A LAUNCH IF", conditions)]),
    )
    if output is Format.TABLE:
        say(
            "A launch matching any rule awaits an admin's approval."
            if rules
            else "No approval rules: no launch awaits approval."
        )


@approval_rules.command("show")
def show_approval_rules(output: OutputOption = Format.TABLE) -> None:
    """The approval rules, each with the conditions a launch must all meet to be held."""
    _show_rules(context.api().get("/v1/approval-rules"), output)


@approval_rules.command("set")
def set_approval_rules(
    file: Annotated[
        Path,
        typer.Option(
            "--file",
            "-f",
            help="YAML or JSON: a list of rules, or an object with `rules`; '-' reads stdin.",
            allow_dash=True,
        ),
    ],
    output: OutputOption = Format.TABLE,
) -> None:
    """Replace every approval rule with those of the file (an empty list: none)."""
    raw = sys.stdin.read() if str(file) == "-" else _read(file)
    body = rules_body(raw, "stdin" if str(file) == "-" else str(file))
    _show_rules(context.api().put("/v1/approval-rules", body), output)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as error:
        raise CliError(f"Cannot read {path}: {error.strerror}", ExitCode.USAGE) from None


def rules_body(raw: str, where: str) -> dict[str, Any]:
    """The body of PUT /v1/approval-rules from a file's text: JSON, or YAML."""
    try:
        parsed = json.loads(raw)
    except ValueError:
        try:
            parsed = yaml.safe_load(raw)
        except yaml.YAMLError as error:
            raise CliError(f"{where} is neither JSON nor YAML: {error}", ExitCode.USAGE) from None
    if isinstance(parsed, list):
        return {"rules": parsed}
    if isinstance(parsed, dict) and isinstance(parsed.get("rules"), list):
        return parsed
    raise CliError(
        f"{where} must hold a list of rules, or an object whose `rules` is that list.",
        ExitCode.USAGE,
    )
