"""`boreas deployments`: groups of instances from a template, created, shown, watched, scaled and
deleted as one (docs/deployments.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from boreas_cli import context, refs
from boreas_cli.client import Api
from boreas_cli.deployment_watch import (
    GONE,
    Deployment,
    members,
    names_of_failed,
    run_watch,
    scaled,
    why,
)
from boreas_cli.errors import CliError, ExitCode
from boreas_cli.options import Limit, Timeout, Wait
from boreas_cli.output import (
    Column,
    Format,
    OutputOption,
    emit,
    field,
    render_json,
    render_table,
    say,
    table_text,
    when,
)
from boreas_cli.templates import parameters_of, request_of
from boreas_cli.watch import approval_note

app = typer.Typer(
    help="Deployments: groups of instances from a template, created, scaled and deleted as one.",
    no_args_is_help=True,
)

# Deployments a name no longer stands for.
ENDED = frozenset({"deleted", "rejected"})

DeploymentRef = Annotated[
    str,
    typer.Argument(
        help="A deployment id, or the name of one of yours neither deleted nor rejected."
    ),
]


def _groups(deployment: Deployment) -> str:
    """``db:1 web:2``: each group and its count."""
    groups = deployment.get("groups")
    if not groups:
        return "-"
    return " ".join(f"{g.get('name')}:{g.get('count')}" for g in groups)


def _running(deployment: Deployment) -> str:
    """``2/3``: its instances running, of those that are not gone."""
    if deployment.get("groups") is None:
        return "-"
    found = [m for m in members(deployment) if m.get("state") not in GONE]
    return f"{sum(1 for m in found if m.get('state') == 'running')}/{len(found)}"


COLUMNS: list[Column] = [
    ("ID", field("id")),
    ("NAME", field("name")),
    ("OWNER", field("owner")),
    ("STATE", field("state")),
    ("GROUPS", _groups),
    ("RUNNING", _running),
    ("CREATED", lambda d: when(d.get("created_at"))),
]
FIELDS: list[Column] = [
    ("id", field("id")),
    ("name", field("name")),
    ("owner", field("owner")),
    ("state", field("state")),
    ("reason", field("reason")),
    ("failed", lambda d: ", ".join(names_of_failed(d)) or None),
    ("on_failure", field("on_failure")),
    ("parameters", lambda d: d.get("parameters") or None),
    ("created", lambda d: when(d.get("created_at"))),
    ("updated", lambda d: when(d.get("updated_at"))),
]
MEMBER_COLUMNS: list[Column] = [
    ("GROUP", field("group_cell")),
    ("COUNT", field("count_cell")),
    ("AFTER", field("after_cell")),
    ("SPREAD", field("spread_cell")),
    ("INSTANCE", field("name")),
    ("STATE", field("state")),
    ("ID", field("id")),
]


def member_rows(deployment: Deployment) -> list[dict[str, Any]]:
    """A row per instance, its group's name, count, after and spread on the group's first."""
    rows = []
    for group in deployment.get("groups") or []:
        first = {
            "group_cell": group.get("name"),
            "count_cell": group.get("count"),
            "after_cell": ",".join(group.get("after") or []) or "-",
            "spread_cell": group.get("spread") or "-",
        }
        instances = group.get("instances") or [{"name": "-", "state": "-", "id": "-"}]
        for index, instance in enumerate(instances):
            cells = first if index == 0 else dict.fromkeys(first, "")
            rows.append({**cells, **instance})
    return rows


def explain(deployment: Deployment) -> None:
    """Lines on stderr for what its state's name alone does not say."""
    state = deployment.get("state")
    name = deployment.get("name")
    if state in ("rejected", "failed", "degraded"):
        say(f"{name} is {state}: {why(deployment) or '-'}.")
    for member in members(deployment):
        if member.get("state") == "awaiting_approval":
            say(f"{member.get('name')} {approval_note(member)}.")


def emit_deployment(deployment: Deployment, output: Format) -> None:
    """As JSON, or its fields and then a table of its groups and their instances."""
    if output is Format.JSON:
        print(render_json(deployment), flush=True)
        return
    pairs = [{"field": name, "value": get(deployment)} for name, get in FIELDS]
    fields = render_table(pairs, [("FIELD", field("field")), ("VALUE", field("value"))])
    print(table_text(fields), flush=True)
    if deployment.get("groups"):
        print(flush=True)
        print(table_text(render_table(member_rows(deployment), MEMBER_COLUMNS)), flush=True)
    explain(deployment)


def listed(api: Api, limit: int | None = None, **params: Any) -> list[Deployment]:
    """The deployments the list gives, newest first, following its pages (up to ``limit``)."""
    return api.pages("/v1/deployments", limit=limit, **params)


def resolve(api: Api, ref: str) -> str:
    """A deployment id from an id or a name (among deployments not deleted or rejected)."""
    return refs.resolve(
        api,
        ref,
        path="/v1/deployments",
        noun="deployment",
        ended=ENDED,
        ended_as="deleted or rejected",
    )


@app.command()
def create(
    file: Annotated[
        Path,
        typer.Option(
            "--file",
            "-f",
            help="The template, YAML or JSON ('-': stdin); or a whole request with `name`, "
            "`template` and `parameters`.",
            allow_dash=True,
        ),
    ],
    name: Annotated[
        str | None,
        typer.Option(help="The deployment's name (default: the file's name, without extension)."),
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            "-p",
            help="NAME=VALUE for {{ NAME }} in the template's strings; repeatable.",
        ),
    ] = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option(help="Send the same key again to get the same deployment, not a second one."),
    ] = None,
    wait: Wait = False,
    timeout: Timeout = None,
    output: OutputOption = Format.TABLE,
) -> None:
    """Create a deployment from a template: accepted as `requested`, admitted (or rejected) as
    one, then its groups start in the order `after` gives.

    A YAML file is sent as YAML (Content-Type: application/yaml), a JSON one as JSON; the gateway
    checks the template and names every problem at its JSON Pointer."""
    request, _ = request_of(file, name, parameters_of(param or []))
    api = context.api()
    headers = {"Content-Type": request.content_type}
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    created = api.request("POST", "/v1/deployments", content=request.content(), headers=headers)
    if wait:
        run_watch(
            api.settings,
            str(created["id"]),
            target=frozenset({"running"}),
            output=output,
            timeout=timeout,
        )
    else:
        emit_deployment(created, output)


@app.command("list")
def list_deployments(
    owner: Annotated[str | None, typer.Option(help="Admins: only this user's deployments.")] = None,
    limit: Limit = None,
    output: OutputOption = Format.TABLE,
) -> None:
    """Your deployments, newest first (admins: everyone's)."""
    found = listed(context.api(), limit=limit, owner=owner)
    emit(found, output, lambda: render_table(found, COLUMNS))


@app.command()
def show(ref: DeploymentRef, output: OutputOption = Format.TABLE) -> None:
    """One deployment: its state (and why), and its groups with their instances and states."""
    api = context.api()
    emit_deployment(api.get(f"/v1/deployments/{resolve(api, ref)}"), output)


@app.command()
def watch(ref: DeploymentRef, timeout: Timeout = None, output: OutputOption = Format.TABLE) -> None:
    """Show its changes, and its instances', as they happen, until it is running, degraded,
    failed, deleted or rejected with none of its instances still changing; exit 1 if it is
    degraded, failed or rejected. Ctrl-C stops watching."""
    api = context.api()
    run_watch(api.settings, resolve(api, ref), output=output, timeout=timeout)


@app.command()
def scale(
    ref: DeploymentRef,
    group: Annotated[str, typer.Argument(help="The group's name in the template.")],
    count: Annotated[int, typer.Argument(help="How many instances it should have.", min=1)],
    wait: Wait = False,
    timeout: Timeout = None,
    output: OutputOption = Format.TABLE,
) -> None:
    """Give a group more instances (admitted as a launch is: quota, budget, lease, approval
    rules) or fewer (the newest are terminated)."""
    api = context.api()
    deployment_id = resolve(api, ref)
    known = _member_ids(api, deployment_id) if wait else set()
    asked = api.post(f"/v1/deployments/{deployment_id}/scale", {"group": group, "count": count})
    if not wait:
        emit_deployment(asked, output)
        return
    final = run_watch(
        api.settings,
        deployment_id,
        done=scaled(group, count, known),
        output=output,
        timeout=timeout,
    )
    _check_scaled(final, group, count, known, deployment_id)


def _member_ids(api: Api, deployment_id: str) -> set[str]:
    """The ids of the deployment's instances, as they are before a scaling."""
    return {str(m.get("id")) for m in members(api.get(f"/v1/deployments/{deployment_id}"))}


def _check_scaled(
    final: Deployment, group: str, count: int, known: set[str], deployment_id: str
) -> None:
    """Fail unless ``group`` ended with ``count`` live instances, naming those it added that
    ended gone (``known``: its instances before the scaling)."""
    in_group = [m for m in members(final) if m["group"] == group]
    live = [m for m in in_group if m.get("state") not in GONE]
    if len(live) == count:
        return
    failed = _added_and_gone(in_group, known)
    raise CliError(
        f"{group} has {len(live)} instances, not {count}"
        + (f": {', '.join(failed)}" if failed else "")
        + f" (boreas deployments show {deployment_id} says why).",
        ExitCode.FAILURE,
    )


def _added_and_gone(instances: list[dict[str, Any]], known: set[str]) -> list[str]:
    """Each of ``instances`` not ``known`` before the scaling that is gone, as "name state"."""
    return [
        f"{m.get('name')} {m.get('state')}"
        for m in instances
        if str(m.get("id")) not in known and m.get("state") in GONE
    ]


@app.command()
def delete(
    ref: DeploymentRef,
    wait: Wait = False,
    timeout: Timeout = None,
    output: OutputOption = Format.TABLE,
) -> None:
    """Terminate every instance, in reverse order of start, then end `deleted` (asking again
    changes nothing)."""
    api = context.api()
    deployment_id = resolve(api, ref)
    deleting = api.delete(f"/v1/deployments/{deployment_id}")
    if wait:
        run_watch(
            api.settings,
            deployment_id,
            done=lambda d: d.get("state") in ENDED,
            target=frozenset({"deleted"}),
            output=output,
            timeout=timeout,
        )
    elif deleting is not None:
        emit_deployment(deleting, output)
    else:
        say(f"Deleting {deployment_id}.")
