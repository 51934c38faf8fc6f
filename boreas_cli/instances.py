"""`boreas instances`: launch, list, show, act on, terminate and watch instances."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import typer

from boreas_cli import context
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
    render_table,
    say,
    when,
)
from boreas_cli.watch import SETTLED, run_watch

app = typer.Typer(help="Launch instances, act on them and watch them settle.", no_args_is_help=True)

COLUMNS: list[Column] = [
    ("ID", field("id")),
    ("NAME", field("name")),
    ("OWNER", field("owner")),
    ("STATE", field("state")),
    ("CPUS", field("cpus")),
    ("MEMORY_MB", field("memory_mb")),
    ("PROVIDER", field("provider")),
    ("REGION", field("region")),
    ("CREATED", lambda i: when(i.get("created_at"))),
]
# Where an instance that is asked to do something should end up.
TARGETS = {
    "stop": frozenset({"stopped"}),
    "start": frozenset({"running"}),
    "reboot": frozenset({"running"}),
    "terminate": frozenset({"terminated", "rejected"}),
}
GONE = frozenset({"terminated", "rejected"})

InstanceRefs = Annotated[
    list[str], typer.Argument(help="Instance ids, or names of your instances that are not gone.")
]
Wait = Annotated[bool, typer.Option("--wait", "-w", help="Watch until it gets there.")]
Timeout = Annotated[
    float | None,
    typer.Option(help="With --wait or watch: give up (exit 1) after this many seconds."),
]


def resolve(api: Api, ref: str) -> str:
    """An instance id from an id or a name (among instances not terminated or rejected)."""
    try:
        return str(uuid.UUID(ref))
    except ValueError:
        pass
    me = api.get("/v1/users/me")
    named = [
        i
        for i in api.pages("/v1/instances", owner=me["username"])
        if i["name"] == ref and i["state"] not in GONE
    ]
    if not named:
        raise CliError(
            f"You have no instance named {ref!r} (that is not gone).", ExitCode.NOT_FOUND
        )
    if len(named) > 1:
        ids = ", ".join(i["id"] for i in named)
        raise CliError(f"Several instances are named {ref!r} ({ids}); give an id.")
    return str(named[0]["id"])


@app.command()
def launch(
    name: Annotated[str, typer.Argument(help="A DNS label: a-z, 0-9 and '-'.")],
    image: Annotated[str, typer.Option(help="The image (a logical name or a provider id).")],
    cpus: Annotated[int, typer.Option(help="Virtual CPUs.")] = 1,
    memory_mb: Annotated[int, typer.Option("--memory-mb", help="Memory in MiB.")] = 1024,
    region: Annotated[str | None, typer.Option(help="Only accounts in this region.")] = None,
    account: Annotated[str | None, typer.Option(help="This account (id or name) only.")] = None,
    provider: Annotated[str | None, typer.Option(help="Accounts of this provider only.")] = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option(help="Send the same key again to get the same instance, not a second one."),
    ] = None,
    wait: Wait = False,
    timeout: Timeout = None,
    output: OutputOption = Format.TABLE,
) -> None:
    """Launch an instance; it is accepted as `requested` and then placed on a cloud."""
    api = context.api()
    placement = {
        key: value
        for key, value in {"region": region, "account": account, "provider": provider}.items()
        if value is not None
    }
    body = {"name": name, "image": image, "cpus": cpus, "memory_mb": memory_mb}
    if placement:
        body["placement"] = placement
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    instance = api.post("/v1/instances", body, headers=headers)
    if wait:
        run_watch(
            api.settings,
            [instance["id"]],
            target=frozenset({"running"}),
            output=output,
            timeout=timeout,
        )
    else:
        emit_record(instance, output)


@app.command("list")
def list_instances(
    owner: Annotated[str | None, typer.Option(help="Admins: only this user's instances.")] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many (newest first).")] = None,
    output: OutputOption = Format.TABLE,
) -> None:
    """Your instances, newest first (admins: everyone's)."""
    emit_list(context.api().pages("/v1/instances", limit=limit, owner=owner), output, COLUMNS)


@app.command()
def show(
    instance: Annotated[str, typer.Argument(help="An instance id or name.")],
    output: OutputOption = Format.TABLE,
) -> None:
    """One instance, every field."""
    api = context.api()
    emit_record(api.get(f"/v1/instances/{resolve(api, instance)}"), output)


def _act(action: str, refs: list[str], wait: bool, timeout: float | None, output: Format) -> None:
    api = context.api()
    ids = [resolve(api, ref) for ref in refs]
    done: list[dict[str, Any]] = []
    for instance_id in ids:
        if action == "terminate":
            done.append(api.delete(f"/v1/instances/{instance_id}"))
        else:
            done.append(api.post(f"/v1/instances/{instance_id}/{action}"))
    if wait:
        run_watch(api.settings, ids, target=TARGETS[action], output=output, timeout=timeout)
    else:
        emit(done, output, lambda: render_table(done, COLUMNS))


@app.command()
def stop(
    refs: InstanceRefs,
    wait: Wait = False,
    timeout: Timeout = None,
    output: OutputOption = Format.TABLE,
) -> None:
    """Stop running instances."""
    _act("stop", refs, wait, timeout, output)


@app.command()
def start(
    refs: InstanceRefs,
    wait: Wait = False,
    timeout: Timeout = None,
    output: OutputOption = Format.TABLE,
) -> None:
    """Start stopped instances."""
    _act("start", refs, wait, timeout, output)


@app.command()
def reboot(
    refs: InstanceRefs,
    wait: Wait = False,
    timeout: Timeout = None,
    output: OutputOption = Format.TABLE,
) -> None:
    """Reboot running instances."""
    _act("reboot", refs, wait, timeout, output)


@app.command()
def terminate(
    refs: InstanceRefs,
    wait: Wait = False,
    timeout: Timeout = None,
    output: OutputOption = Format.TABLE,
) -> None:
    """Terminate instances (asking again changes nothing)."""
    _act("terminate", refs, wait, timeout, output)


@app.command()
def watch(
    refs: Annotated[
        list[str] | None,
        typer.Argument(help="Instances to watch (default: every one of yours still changing)."),
    ] = None,
    timeout: Timeout = None,
    output: OutputOption = Format.TABLE,
) -> None:
    """Show state changes as they happen until the instances settle (running, stopped,
    terminated, error, rejected); exit 1 if one ends in error or rejected. Ctrl-C stops watching."""
    api = context.api()
    if refs:
        ids = [resolve(api, ref) for ref in refs]
    else:
        me = api.get("/v1/users/me")
        ids = [
            str(i["id"])
            for i in api.pages("/v1/instances", owner=me["username"])
            if i["state"] not in SETTLED
        ]
        if not ids:
            say("Nothing to watch: none of your instances is changing.")
            return
    run_watch(api.settings, ids, target=None, output=output, timeout=timeout)
