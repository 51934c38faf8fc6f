"""The `boreas` command: logging in and out, and the command groups."""

from __future__ import annotations

from typing import Annotated

import typer

from boreas_cli import admin, config, context, deployments, governance, instances, prompts, tail
from boreas_cli.client import Api
from boreas_cli.errors import CliError, ExitCode
from boreas_cli.output import Format, OutputOption, emit_list, emit_record, field, say, when

app = typer.Typer(
    name="boreas",
    help="Boreas from the command line: instances on shared cloud accounts, deployments of them, "
    "events, and the admin's users, accounts, grants, quotas, lease policies, approval rules and "
    "usage. Exit codes: docs/cli.md.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(instances.app, name="instances")
app.add_typer(deployments.app, name="deployments")
app.add_typer(tail.app, name="events")
app.add_typer(admin.users, name="users")
app.add_typer(admin.accounts, name="accounts")
app.add_typer(admin.grants, name="grants")
app.add_typer(admin.quotas, name="quotas")
app.add_typer(governance.lease_policies, name="lease-policies")
app.add_typer(governance.approval_rules, name="approval-rules")
app.command()(admin.usage)


@app.callback()
def gateway(
    url: Annotated[
        str | None,
        typer.Option(
            envvar="BOREAS_URL",
            help="The gateway (default: the config file's, else http://127.0.0.1:8080).",
            show_default=False,
        ),
    ] = None,
) -> None:
    context.use_url(url)


@app.command()
def login(
    username: Annotated[
        str | None, typer.Option("--username", "-u", help="Asked for when not given.")
    ] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from stdin's first line.")
    ] = False,
) -> None:
    """Log in and keep the token in the config file (readable by you only)."""
    settings = context.settings()
    username = username or typer.prompt("Username", err=True)
    secret = prompts.password(from_stdin=password_stdin)
    api = Api(settings, needs_token=False)
    issued = api.post("/v1/tokens", {"username": username, "password": secret})
    stored = config.read_file()
    path = config.write_file(
        {
            **stored,
            "url": settings.url,
            "username": username,
            "token": issued["token"],
            "expires_at": issued["expires_at"],
        }
    )
    say(f"Logged in to {settings.url} as {username} until {when(issued['expires_at'])} ({path}).")
    if settings.token_from_env:
        say("Note: BOREAS_TOKEN is set and wins over the stored token; unset it to use this one.")


@app.command()
def logout() -> None:
    """Revoke the token on the gateway and forget it here."""
    settings = context.settings()
    stored = config.read_file()
    if not settings.token:
        say("Not logged in.")
        return
    unreachable: CliError | None = None
    try:
        Api(settings).delete("/v1/tokens/current")
    except CliError as refused:
        if refused.code is ExitCode.UNREACHABLE:
            unreachable = refused
        elif refused.code is not ExitCode.NOT_LOGGED_IN:  # 401: it was no longer valid anyway
            raise
    if settings.token_from_env:
        say("The token in BOREAS_TOKEN is revoked; unset the variable.")
    elif "token" in stored:
        config.write_file({k: v for k, v in stored.items() if k not in ("token", "expires_at")})
        say(f"Logged out of {settings.url}.")
    if unreachable is not None:
        raise CliError(
            f"{unreachable.message}\nThe token is forgotten here but stays valid until it "
            "expires: revoke it later with `boreas users revoke-tokens <you>`.",
            ExitCode.UNREACHABLE,
        )


@app.command()
def whoami(output: OutputOption = Format.TABLE) -> None:
    """Who the token belongs to."""
    emit_record(context.api().get("/v1/users/me"), output)


@app.command()
def status(output: OutputOption = Format.TABLE) -> None:
    """Which services are alive, from their heartbeats on the bus (no login needed)."""
    services = context.api(needs_token=False).get("/v1/status")["services"]
    rows = [{"service": name, **state} for name, state in services.items()]
    if output is Format.JSON:
        emit_record({"services": services}, output)
        return
    emit_list(
        rows,
        output,
        [
            ("SERVICE", field("service")),
            ("ALIVE", field("alive")),
            ("REPLICAS", field("replicas")),
            ("LAST_SEEN", lambda s: when(s.get("last_seen"))),
            ("FAILING", lambda s: ",".join(s.get("failing") or []) or None),
        ],
    )
