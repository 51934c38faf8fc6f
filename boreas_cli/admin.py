"""Commands for admins: users, provider accounts, grants, quotas, and usage for chargeback."""

from __future__ import annotations

import enum
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from boreas_cli import context, prompts
from boreas_cli.client import Api
from boreas_cli.errors import CliError, ExitCode
from boreas_cli.output import (
    Column,
    Format,
    OutputOption,
    emit,
    emit_list,
    emit_record,
    field,
    money,
    render_csv,
    render_table,
    say,
    when,
)

users = typer.Typer(
    help="Users (admins): list, create, disable, reset, delete.", no_args_is_help=True
)
accounts = typer.Typer(
    help="Provider accounts: list, show (with health), register, delete.", no_args_is_help=True
)
grants = typer.Typer(help="Who may launch on a provider account (admins).", no_args_is_help=True)
quotas = typer.Typer(help="Per-user limits and what is in use.", no_args_is_help=True)


class Role(enum.StrEnum):
    USER = "user"
    ADMIN = "admin"


Username = Annotated[str, typer.Argument(help="A username.")]
Yes = Annotated[bool, typer.Option("--yes", "-y", help="Do it without asking.")]
PasswordStdin = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from the first line of stdin.")
]

USER_COLUMNS: list[Column] = [
    ("USERNAME", field("username")),
    ("ROLE", field("role")),
    ("DISABLED", field("disabled")),
    ("CREATED", lambda u: when(u.get("created_at"))),
    ("ID", field("id")),
]


@users.command("list")
def list_users(output: OutputOption = Format.TABLE) -> None:
    """Every user, by username."""
    emit_list(context.api().pages("/v1/users"), output, USER_COLUMNS)


@users.command()
def create(
    username: Username,
    role: Annotated[Role, typer.Option(help="What they may do.")] = Role.USER,
    password_stdin: PasswordStdin = False,
    output: OutputOption = Format.TABLE,
) -> None:
    """Create a user with a password (asked for twice, hidden, unless --password-stdin)."""
    api = context.api()
    secret = prompts.password(from_stdin=password_stdin, confirm=True)
    created = api.post("/v1/users", {"username": username, "password": secret, "role": role.value})
    emit_record(created, output)


def _change(username: str, change: dict[str, Any], output: Format) -> None:
    emit_record(context.api().patch(f"/v1/users/{username}", change), output)


@users.command()
def disable(username: Username, output: OutputOption = Format.TABLE) -> None:
    """Disable a user: their tokens stop working at once."""
    _change(username, {"disabled": True}, output)


@users.command()
def enable(username: Username, output: OutputOption = Format.TABLE) -> None:
    """Let a disabled user log in again."""
    _change(username, {"disabled": False}, output)


@users.command("set-role")
def set_role(username: Username, role: Role, output: OutputOption = Format.TABLE) -> None:
    """Make a user an admin, or an admin a user."""
    _change(username, {"role": role.value}, output)


@users.command("reset-password")
def reset_password(
    username: Username, password_stdin: PasswordStdin = False, output: OutputOption = Format.TABLE
) -> None:
    """Give a user a new password; every token they hold stops working."""
    secret = prompts.password(from_stdin=password_stdin, confirm=True, label="New password")
    _change(username, {"password": secret}, output)


@users.command("revoke-tokens")
def revoke_tokens(username: Username) -> None:
    """Log a user out everywhere (users may do it for themselves)."""
    context.api().delete(f"/v1/users/{username}/tokens")
    say(f"Every token of {username} is revoked.")


@users.command()
def delete(
    username: Username,
    terminate_instances: Annotated[
        bool, typer.Option("--terminate-instances", help="Terminate their live instances.")
    ] = False,
    transfer_to: Annotated[
        str | None, typer.Option(help="Give their live instances to this user.")
    ] = None,
    yes: Yes = False,
) -> None:
    """Delete a user: their tokens, webhooks and grants go; the name stays taken."""
    prompts.confirmed(f"Delete the user {username}?", yes)
    context.api().delete(
        f"/v1/users/{username}",
        instances="terminate" if terminate_instances else None,
        transfer_to=transfer_to,
    )
    say(f"Deleted {username}.")


# -- provider accounts ----------------------------------------------------------------------------

ACCOUNT_COLUMNS: list[Column] = [
    ("ID", field("id")),
    ("NAME", field("name")),
    ("PROVIDER", field("provider")),
    ("REGIONS", lambda a: ",".join(a.get("config", {}).get("regions", [])) or None),
    ("GRANTS", lambda a: ",".join(a["grants"]) if "grants" in a else None),
    ("REVISION", field("revision")),
]


def account_id(api: Api, ref: str) -> str:
    """The id of the account named or numbered ``ref``."""
    for account in api.get("/v1/provider-accounts")["items"]:
        if ref in (account["id"], account["name"]):
            return str(account["id"])
    raise CliError(f"There is no provider account {ref!r} for you to see.", ExitCode.NOT_FOUND)


@accounts.command("list")
def list_accounts(output: OutputOption = Format.TABLE) -> None:
    """Accounts granted to you (admins: all, with their grants); never their credentials."""
    emit_list(context.api().get("/v1/provider-accounts")["items"], output, ACCOUNT_COLUMNS)


@accounts.command("show")
def show_account(
    account: Annotated[str, typer.Argument(help="An account id or name.")],
    output: OutputOption = Format.TABLE,
) -> None:
    """One account; admins also see its grants and health (the poller's last poll, errors)."""
    api = context.api()
    found = api.get(f"/v1/provider-accounts/{account_id(api, account)}")
    health = found.get("health") or {}
    rows: list[Column] = [(key, field(key)) for key in found if key != "health"]
    rows += [(f"health.{key}", _getter(health, key)) for key in health]
    emit_record(found, output, rows)


def _getter(values: dict[str, Any], key: str) -> Callable[[dict[str, Any]], Any]:
    return lambda _item: values[key]


@accounts.command("create")
def create_account(
    name: Annotated[str, typer.Argument(help="A name for the account.")],
    provider: Annotated[str, typer.Option(help="simulator, ec2, openstack, or a libcloud driver.")],
    credentials_file: Annotated[
        Path,
        typer.Option(
            help="A JSON object of the credentials; '-' reads it from stdin. Never an argument: "
            "the shell's history would keep it.",
            allow_dash=True,
        ),
    ],
    config: Annotated[str, typer.Option(help="The account's config, a JSON object.")] = "{}",
    grant: Annotated[
        list[str] | None,
        typer.Option(help="A user who may launch there ('*': everyone); repeatable."),
    ] = None,
    output: OutputOption = Format.TABLE,
) -> None:
    """Register a provider account; the cloud checks its credentials first."""
    api = context.api()
    raw = sys.stdin.read() if str(credentials_file) == "-" else _read(credentials_file)
    body = {
        "name": name,
        "provider": provider,
        "credentials": _json_object(raw, "the credentials"),
        "config": _json_object(config, "--config"),
        "grants": grant or [],
    }
    emit_record(api.post("/v1/provider-accounts", body), output)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as error:
        raise CliError(f"Cannot read {path}: {error.strerror}", ExitCode.USAGE) from None


def _json_object(raw: str, what: str) -> dict[str, Any]:
    try:
        parsed = json.loads(raw)
    except ValueError as error:
        raise CliError(f"{what} is not JSON: {error}", ExitCode.USAGE) from None
    if not isinstance(parsed, dict):
        raise CliError(f"{what} must be a JSON object.", ExitCode.USAGE)
    return parsed


@accounts.command("delete")
def delete_account(
    account: Annotated[str, typer.Argument(help="An account id or name.")], yes: Yes = False
) -> None:
    """Delete a provider account (refused while Boreas instances live there)."""
    api = context.api()
    found = account_id(api, account)
    prompts.confirmed(f"Delete the provider account {account}?", yes)
    api.delete(f"/v1/provider-accounts/{found}")
    say(f"Deleted the provider account {account}.")


# -- grants ---------------------------------------------------------------------------------------

Account = Annotated[str, typer.Argument(help="An account id or name.")]
Grantees = Annotated[list[str], typer.Argument(help="Usernames, or '*' for everyone.")]


def _grants_of(api: Api, account: str) -> tuple[str, list[str]]:
    found = account_id(api, account)
    return found, list(api.get(f"/v1/provider-accounts/{found}").get("grants", []))


def _show_grants(account: dict[str, Any], output: Format) -> None:
    rows = [{"account": account["name"], "grantee": g} for g in account["grants"]]
    emit(
        {"account": account["name"], "id": account["id"], "grants": account["grants"]},
        output,
        lambda: render_table(rows, [("ACCOUNT", field("account")), ("GRANTEE", field("grantee"))]),
    )


def _replace(api: Api, found: str, grantees: list[str], output: Format) -> None:
    ordered = list(dict.fromkeys(grantees))
    updated = api.put(f"/v1/provider-accounts/{found}/grants", {"grants": ordered})
    _show_grants(updated, output)


@grants.command("show")
def show_grants(account: Account, output: OutputOption = Format.TABLE) -> None:
    """Who may launch on the account."""
    api = context.api()
    _show_grants(api.get(f"/v1/provider-accounts/{account_id(api, account)}"), output)


@grants.command("set")
def set_grants(account: Account, grantees: Grantees, output: OutputOption = Format.TABLE) -> None:
    """Exactly these users may launch on the account."""
    api = context.api()
    _replace(api, account_id(api, account), grantees, output)


@grants.command("add")
def add_grants(account: Account, grantees: Grantees, output: OutputOption = Format.TABLE) -> None:
    """These users may launch on the account too."""
    api = context.api()
    found, current = _grants_of(api, account)
    _replace(api, found, current + grantees, output)


@grants.command("remove")
def remove_grants(
    account: Account, grantees: Grantees, output: OutputOption = Format.TABLE
) -> None:
    """These users may no longer launch on the account."""
    api = context.api()
    found, current = _grants_of(api, account)
    _replace(api, found, [g for g in current if g not in grantees], output)


# -- quotas ---------------------------------------------------------------------------------------

RESOURCES = ("instances", "cpus", "memory_mb")
COST_LIMIT, COST_USAGE = "cost_per_month", "cost_this_month"


def quota_rows(quota: dict[str, Any]) -> list[dict[str, Any]]:
    """A row per limit with what is in use against it: the budget ``cost_per_month`` with
    ``cost_this_month`` (spent plus committed to the month's end)."""
    limits, usage = quota.get("limits", {}), quota.get("usage", {})
    usage_of = {COST_LIMIT: COST_USAGE}
    limit_of = {COST_USAGE: COST_LIMIT}
    names = list(dict.fromkeys([*RESOURCES, *limits, *(limit_of.get(n, n) for n in usage)]))
    return [
        {"resource": n, "limit": limits.get(n), "usage": usage.get(usage_of.get(n, n))}
        for n in names
    ]


def _amount(row: dict[str, Any], key: str) -> Any:
    value = row[key]
    return money(value) if row["resource"] == COST_LIMIT and value is not None else value


def _show_quota(username: str, quota: dict[str, Any], output: Format) -> None:
    rows = quota_rows(quota)
    emit(
        {"username": username, **quota},
        output,
        lambda: render_table(
            rows,
            [
                ("RESOURCE", field("resource")),
                ("LIMIT", lambda r: "unlimited" if r["limit"] is None else _amount(r, "limit")),
                ("IN USE", lambda r: _amount(r, "usage")),
            ],
        ),
    )


def _me(api: Api) -> str:
    return str(api.get("/v1/users/me")["username"])


@quotas.command("show")
def show_quota(
    username: Annotated[str | None, typer.Argument(help="Whose (default: yours).")] = None,
    output: OutputOption = Format.TABLE,
) -> None:
    """A user's limits and what they use (reserved launches included)."""
    api = context.api()
    username = username or _me(api)
    _show_quota(username, api.get(f"/v1/quotas/{username}"), output)


def _limit(value: str | None, name: str, current: Any, kind: type[int | float] = int) -> Any:
    if value is None:
        return current
    if value.lower() in ("unlimited", "none"):
        return None
    try:
        number = kind(value)
        if not math.isfinite(number):  # JSON has no inf nor nan
            raise ValueError(value)
    except ValueError:
        raise CliError(
            f"--{name.replace('_', '-')}: a number, or 'unlimited'.", ExitCode.USAGE
        ) from None
    return number


LimitOption = Annotated[
    str | None, typer.Option(help="A number, or 'unlimited'.", show_default=False)
]


@quotas.command("set")
def set_quota(
    username: Username,
    instances: LimitOption = None,
    cpus: LimitOption = None,
    memory_mb: Annotated[
        str | None, typer.Option("--memory-mb", help="MiB, or 'unlimited'.", show_default=False)
    ] = None,
    cost_per_month: Annotated[
        str | None,
        typer.Option(
            "--cost-per-month",
            help="A budget in the account catalogs' price unit (e.g. 100 or 99.50), or "
            "'unlimited'.",
            show_default=False,
        ),
    ] = None,
    output: OutputOption = Format.TABLE,
) -> None:
    """Set a user's limits (admins); a limit not given stays as it is."""
    api = context.api()
    current = api.get(f"/v1/quotas/{username}").get("limits", {})
    given = {"instances": instances, "cpus": cpus, "memory_mb": memory_mb}
    body = {name: _limit(given[name], name, current.get(name)) for name in RESOURCES}
    # Sent when given, or kept when the gateway has one: never dropped by leaving it out.
    if cost_per_month is not None or COST_LIMIT in current:
        body[COST_LIMIT] = _limit(cost_per_month, COST_LIMIT, current.get(COST_LIMIT), float)
    _show_quota(username, api.put(f"/v1/quotas/{username}", body), output)


# -- usage ----------------------------------------------------------------------------------------

USAGE_HEADER = (
    "from",
    "to",
    "owner",
    "account",
    "account_id",
    "instance_hours",
    "cpu_hours",
    "memory_mb_hours",
    "cost",
)


def usage_rows(report: dict[str, Any], names: dict[str, str]) -> list[dict[str, Any]]:
    """One row per owner and account: what chargeback bills."""
    return [
        {
            "from": report["from"],
            "to": report["to"],
            "owner": owner["owner"],
            "account": names.get(account["account_id"], account["account_id"]),
            "account_id": account["account_id"],
            "instance_hours": account["instance_hours"],
            "cpu_hours": account["cpu_hours"],
            "memory_mb_hours": account["memory_mb_hours"],
            # Running hours times the instance's price per hour (None: an older gateway).
            "cost": account.get("cost"),
        }
        for owner in report["owners"]
        for account in owner["accounts"]
    ]


def usage(
    start: Annotated[
        str | None,
        typer.Option("--from", help="ISO 8601 with a zone (default: 30 days before --to)."),
    ] = None,
    end: Annotated[
        str | None, typer.Option("--to", help="ISO 8601 with a zone (default: now).")
    ] = None,
    owner: Annotated[
        str | None, typer.Option(help="Only this user (users: only themselves).")
    ] = None,
    as_csv: Annotated[
        bool, typer.Option("--csv", help="CSV for chargeback, a row per owner and account.")
    ] = False,
    output: OutputOption = Format.TABLE,
) -> None:
    """Running time and cost per owner and account over a period.

    Instance-, cpu- and memory-MB-hours, and the cost: running hours times each instance's price
    per hour."""
    api = context.api()
    report = api.get("/v1/usage", **{"from": start, "to": end, "owner": owner})
    names = {a["id"]: a["name"] for a in api.get("/v1/provider-accounts")["items"]}
    rows = usage_rows(report, names)
    if as_csv:
        sys.stdout.write(
            render_csv(([row[key] for key in USAGE_HEADER] for row in rows), USAGE_HEADER)
        )
        return
    if output is Format.TABLE:
        say(f"Usage from {when(report['from'])} to {when(report['to'])}")
    emit(
        report,
        output,
        lambda: render_table(
            rows,
            [
                ("OWNER", field("owner")),
                ("ACCOUNT", field("account")),
                ("INSTANCE_HOURS", field("instance_hours")),
                ("CPU_HOURS", field("cpu_hours")),
                ("MEMORY_MB_HOURS", field("memory_mb_hours")),
                ("COST", lambda r: money(r["cost"])),
            ],
        ),
    )
