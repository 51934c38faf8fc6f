"""Following instances until they settle: their state changes arrive on GET /v1/events; each
change re-reads the instance, the gateway's answer being the authority on its state."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Iterator
from typing import Any

import httpx
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn

from boreas_cli.client import TIMEOUT, USER_AGENT, auth_headers, failure_of, unreachable
from boreas_cli.config import Settings
from boreas_cli.errors import CliError, ExitCode
from boreas_cli.events import EventFeed
from boreas_cli.output import Format, when

# States an instance stays in until someone acts on it.
SETTLED = frozenset({"running", "stopped", "terminated", "error", "rejected", "denied"})
FAILED = frozenset({"error", "rejected", "denied"})


def is_done(state: str, target: frozenset[str] | None) -> bool:
    """``target``: the states asked for (e.g. ``stopped`` after a stop); None: any settled one."""
    return state in FAILED or state in (target or SETTLED)


def went_wrong(state: str, target: frozenset[str] | None) -> bool:
    return state not in target if target else state in FAILED


def approval_note(instance: dict[str, Any]) -> str:
    """What an instance in ``awaiting_approval`` waits for, and until when."""
    rules = instance.get("approval_rules")
    note = "awaits an admin's approval"
    if rules:
        note += f" (rule{'s' if len(rules) > 1 else ''} {', '.join(rules)})"
    if instance.get("approval_deadline"):
        note += f", denied if unanswered by {when(instance['approval_deadline'])}"
    return f"{note}: boreas instances approve|deny {instance['id']}"


def change_line(instance: dict[str, Any], old: str | None) -> str:
    state = instance["state"] if old is None else f"{old} → {instance['state']}"
    line = f"{when(instance.get('updated_at'))}  {instance['name']}  {instance['id']}  {state}"
    if instance["state"] in FAILED and instance.get("reason"):
        line += f"  ({instance['reason']})"
    elif instance["state"] == "awaiting_approval":
        line += f"  ({approval_note(instance)})"
    return line


class Display:
    """State lines (table) or instances as JSON lines (json) on stdout; a spinner per unsettled
    instance on stderr while a person watches."""

    def __init__(self, output: Format, target: frozenset[str] | None) -> None:
        self.output, self.target = output, target
        self.progress: Progress | None = None
        self.tasks: dict[str, TaskID] = {}

    @contextlib.contextmanager
    def shown(self) -> Iterator[Display]:
        if self.output is Format.TABLE and sys.stderr.isatty():
            self.progress = Progress(
                SpinnerColumn(finished_text="[green]✓[/]"),
                TextColumn("{task.description}"),
                console=Console(stderr=True),
                transient=True,
                # Lines printed meanwhile go above the spinners, when both are this terminal.
                redirect_stdout=sys.stdout.isatty(),
            )
            with self.progress:
                yield self
        else:
            yield self

    def show(self, instance: dict[str, Any], old: str | None) -> None:
        if self.output is Format.JSON:
            print(json.dumps(instance, ensure_ascii=False), flush=True)
        else:
            print(change_line(instance, old), flush=True)
        if self.progress is not None:
            done = is_done(instance["state"], self.target)
            description = f"{instance['name']}  {instance['state']}"
            if instance["id"] not in self.tasks:
                self.tasks[instance["id"]] = self.progress.add_task(description, total=1)
            self.progress.update(
                self.tasks[instance["id"]], description=description, completed=int(done)
            )


async def _fetch(client: httpx.AsyncClient, instance_id: str) -> dict[str, Any]:
    try:
        response = await client.get(f"/v1/instances/{instance_id}")
    except httpx.TransportError as error:
        raise unreachable(str(client.base_url), error) from None
    if response.is_error:
        raise failure_of(response)
    found: dict[str, Any] = response.json()
    return found


async def follow(
    settings: Settings,
    ids: list[str],
    *,
    target: frozenset[str] | None,
    output: Format,
    timeout: float | None,
) -> dict[str, dict[str, Any]]:
    """Show the instances ``ids`` until each is done; the last state of each."""
    headers = {"User-Agent": USER_AGENT, **auth_headers(settings.token)}
    async with httpx.AsyncClient(base_url=settings.url, headers=headers, timeout=TIMEOUT) as client:
        feed = EventFeed(client)
        # The stream first, then the states: a change between the two is on the stream.
        await feed.open()
        current: dict[str, dict[str, Any]] = {}
        display = Display(output, target)
        try:
            async with asyncio.timeout(timeout):
                with display.shown():
                    for instance_id in ids:
                        current[instance_id] = await _fetch(client, instance_id)
                        display.show(current[instance_id], None)
                    await _until_done(client, feed, current, display, target)
        except TimeoutError:
            if timeout is None:
                raise
            waiting = [i["name"] for i in current.values() if not is_done(i["state"], target)]
            raise CliError(
                f"Still not settled after {timeout:g} s: {', '.join(waiting)}.", ExitCode.FAILURE
            ) from None
        finally:
            await feed.close()
    return current


async def _until_done(
    client: httpx.AsyncClient,
    feed: EventFeed,
    current: dict[str, dict[str, Any]],
    display: Display,
    target: frozenset[str] | None,
) -> None:
    def all_done() -> bool:
        return all(is_done(i["state"], target) for i in current.values())

    if all_done():
        return
    async with contextlib.aclosing(feed.events()) as events:
        async for event in events:
            if event.subject not in current:
                continue
            now = await _fetch(client, event.subject)
            old = current[event.subject]["state"]
            current[event.subject] = now
            if now["state"] != old:
                display.show(now, old)
            if all_done():
                return


def run_watch(
    settings: Settings,
    ids: list[str],
    *,
    target: frozenset[str] | None,
    output: Format,
    timeout: float | None,
) -> None:
    """Watch, then fail (exit 1) if any instance ended elsewhere than asked."""
    try:
        final = asyncio.run(follow(settings, ids, target=target, output=output, timeout=timeout))
    except KeyboardInterrupt:
        raise CliError("Stopped watching (the instances carry on).", ExitCode.INTERRUPTED) from None
    wrong = [i for i in final.values() if went_wrong(i["state"], target)]
    if wrong:
        described = "; ".join(
            f"{i['name']} is {i['state']}" + (f" ({i['reason']})" if i.get("reason") else "")
            for i in wrong
        )
        raise CliError(described, ExitCode.FAILURE)
