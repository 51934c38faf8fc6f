"""`boreas instances`: launch, list, show, act on, terminate and watch instances; extend their
leases; approve or deny launches held for approval (admins)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from boreas_cli import context, refs
from boreas_cli.client import Api
from boreas_cli.durations import described, seconds_of
from boreas_cli.options import Limit, Timeout, Wait
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
    when,
)
from boreas_cli.watch import SETTLED, approval_note, run_watch

app = typer.Typer(
    help="Launch instances, act on them and watch them settle; extend leases; approve or deny "
    "held launches (admins).",
    no_args_is_help=True,
)

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
# Shown when the gateway gives them for at least one of the instances listed.
OPTIONAL_COLUMNS: list[tuple[str, Column]] = [
    ("expires_at", ("EXPIRES", lambda i: when(i.get("expires_at")))),
    ("price_per_hour", ("PRICE/H", lambda i: money(i.get("price_per_hour")))),
    ("group", ("GROUP", field("group"))),  # a deployment's instance: its group
]
# Where an instance that is asked to do something should end up.
TARGETS = {
    "stop": frozenset({"stopped"}),
    "start": frozenset({"running"}),
    "reboot": frozenset({"running"}),
    # Terminating a launch that awaits approval withdraws it: it is denied.
    "terminate": frozenset({"terminated", "rejected", "denied"}),
    "approve": frozenset({"running"}),
}
GONE = frozenset({"terminated", "rejected", "denied"})

InstanceRefs = Annotated[
    list[str], typer.Argument(help="Instance ids, or names of your instances that are not gone.")
]
Comment = Annotated[
    str | None, typer.Option(help="Why, for the audit log and the owner (who sees it).")
]


def columns(instances: list[dict[str, Any]]) -> list[Column]:
    """The columns of a table of ``instances``: the lease's end, the price per hour and the
    deployment group too when any of them has one."""
    return COLUMNS + [
        column for key, column in OPTIONAL_COLUMNS if any(i.get(key) is not None for i in instances)
    ]


def explain(instance: dict[str, Any]) -> None:
    """A line on stderr for an instance that waits for an admin, or was denied: its state's
    name alone does not say what happens next."""
    state = instance.get("state")
    if state == "awaiting_approval":
        say(f"{instance['name']} {approval_note(instance)}.")
    elif state == "denied":
        say(f"{instance['name']} was denied and will not run: {instance.get('reason') or '-'}.")


def emit_instance(instance: dict[str, Any], output: Format) -> None:
    emit_record(instance, output)
    if output is Format.TABLE:
        explain(instance)


def emit_instances(instances: list[dict[str, Any]], output: Format) -> None:
    emit(instances, output, lambda: render_table(instances, columns(instances)))
    if output is Format.TABLE:
        for instance in instances:
            explain(instance)


def resolve(api: Api, ref: str) -> str:
    """An instance id from an id or a name (among instances not terminated or rejected)."""
    return refs.resolve(
        api, ref, path="/v1/instances", noun="instance", ended=GONE, ended_as="gone"
    )


@app.command()
def launch(
    name: Annotated[str, typer.Argument(help="A DNS label: a-z, 0-9 and '-'.")],
    image: Annotated[str, typer.Option(help="The image (a logical name or a provider id).")],
    cpus: Annotated[int, typer.Option(help="Virtual CPUs.")] = 1,
    memory_mb: Annotated[int, typer.Option("--memory-mb", help="Memory in MiB.")] = 1024,
    region: Annotated[str | None, typer.Option(help="Only accounts in this region.")] = None,
    account: Annotated[str | None, typer.Option(help="This account (id or name) only.")] = None,
    provider: Annotated[str | None, typer.Option(help="Accounts of this provider only.")] = None,
    lease: Annotated[
        str | None,
        typer.Option(
            help="How long it may live (90s, 30m, 2h, 1d), up to your lease policy's max "
            "(default: the policy's default lease, if any).",
            show_default=False,
        ),
    ] = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option(help="Send the same key again to get the same instance, not a second one."),
    ] = None,
    wait: Wait = False,
    timeout: Timeout = None,
    output: OutputOption = Format.TABLE,
) -> None:
    """Launch an instance; it is accepted as `requested` and then placed on a cloud.

    An approval rule may hold it in `awaiting_approval` until an admin approves or denies it."""
    lease_seconds = None if lease is None else seconds_of(lease, "--lease")
    api = context.api()
    placement = {
        key: value
        for key, value in {"region": region, "account": account, "provider": provider}.items()
        if value is not None
    }
    body: dict[str, Any] = {"name": name, "image": image, "cpus": cpus, "memory_mb": memory_mb}
    if placement:
        body["placement"] = placement
    if lease_seconds is not None:
        body["lease_seconds"] = lease_seconds
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
        emit_instance(instance, output)


@app.command("list")
def list_instances(
    owner: Annotated[str | None, typer.Option(help="Admins: only this user's instances.")] = None,
    limit: Limit = None,
    output: OutputOption = Format.TABLE,
) -> None:
    """Your instances, newest first (admins: everyone's)."""
    emit_instances(context.api().pages("/v1/instances", limit=limit, owner=owner), output)


@app.command()
def show(
    instance: Annotated[str, typer.Argument(help="An instance id or name.")],
    output: OutputOption = Format.TABLE,
) -> None:
    """One instance, every field."""
    api = context.api()
    emit_instance(api.get(f"/v1/instances/{resolve(api, instance)}"), output)


def _act(
    action: str,
    refs: list[str],
    wait: bool,
    timeout: float | None,
    output: Format,
    body: dict[str, Any] | None = None,
) -> None:
    api = context.api()
    ids = [resolve(api, ref) for ref in refs]
    done: list[dict[str, Any]] = []
    for instance_id in ids:
        if action == "terminate":
            done.append(api.delete(f"/v1/instances/{instance_id}"))
        else:
            done.append(api.post(f"/v1/instances/{instance_id}/{action}", body))
    if wait:
        run_watch(api.settings, ids, target=TARGETS[action], output=output, timeout=timeout)
    else:
        emit_instances(done, output)


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
def extend(
    instance: Annotated[str, typer.Argument(help="An instance id or name.")],
    by: Annotated[
        str,
        typer.Option(
            "--by", help="How much longer (90s, 30m, 2h, 1d), from its lease's end or from now."
        ),
    ],
    output: OutputOption = Format.TABLE,
) -> None:
    """Extend an instance's lease, up to its owner's lease policy's max from now."""
    seconds = seconds_of(by, "--by")
    api = context.api()
    extended = api.post(f"/v1/instances/{resolve(api, instance)}/extend", {"seconds": seconds})
    emit_instance(extended, output)
    if output is Format.TABLE:
        say(
            f"The lease of {extended['name']} ends at {when(extended.get('expires_at'))} "
            f"(extended by {described(seconds)})."
        )


def _decision(comment: str | None) -> dict[str, Any]:
    return {} if comment is None else {"comment": comment}


@app.command()
def approve(
    refs: Annotated[
        list[str], typer.Argument(help="Instance ids (or names of yours) awaiting approval.")
    ],
    comment: Comment = None,
    wait: Wait = False,
    timeout: Timeout = None,
    output: OutputOption = Format.TABLE,
) -> None:
    """Approve launches held for approval (admins): they go on to be placed and run."""
    _act("approve", refs, wait, timeout, output, _decision(comment))


@app.command()
def deny(
    refs: Annotated[
        list[str], typer.Argument(help="Instance ids (or names of yours) awaiting approval.")
    ],
    comment: Comment = None,
    output: OutputOption = Format.TABLE,
) -> None:
    """Deny launches held for approval (admins): they never run, and their quota is released."""
    _act("deny", refs, False, None, output, _decision(comment))


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
    terminated, error, rejected, denied); exit 1 if one ends in error, rejected or denied. Ctrl-C
    stops watching."""
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
