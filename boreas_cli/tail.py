"""`boreas events tail`: the caller's events as they happen (admins: everyone's)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Annotated, Any

import httpx
import typer

from boreas_cli import context
from boreas_cli.client import TIMEOUT, USER_AGENT, auth_headers
from boreas_cli.config import Settings
from boreas_cli.errors import CliError, ExitCode
from boreas_cli.events import Event, EventFeed
from boreas_cli.output import Format, OutputOption, text, when
from shared.webhooks.topics import matches as topic_matches

app = typer.Typer(help="Events as they happen (GET /v1/events).", no_args_is_help=True)


def summary(event: Event) -> str:
    """The gist of an event's data, for one line."""
    data = event.data
    if "new_state" in data:
        return f"{data.get('old_state') or '-'} → {data['new_state']}"
    if "reason" in data:
        return str(data["reason"])
    if "image" in data:
        cpus, memory = data.get("cpus"), data.get("memory_mb")
        return f"{data.get('name')}: {data['image']}, {cpus} cpus, {memory} MB"
    shown = {k: v for k, v in data.items() if k not in ("instance_id", "owner") and v is not None}
    return text(shown)


def event_line(event: Event) -> str:
    envelope, data = event.envelope, event.data
    subject = str(envelope.get("subject") or "-")
    owner = str(data.get("owner") or "-")
    at = when(envelope.get("time"))
    return f"{at}  {event.topic:<26}  {subject:<36}  {owner:<12}  {summary(event)}"


async def _tail(
    settings: Settings, topics: list[str], since: str | None, count: int | None, output: Format
) -> None:
    headers = {"User-Agent": USER_AGENT, **auth_headers(settings.token)}
    async with httpx.AsyncClient(base_url=settings.url, headers=headers, timeout=TIMEOUT) as client:
        feed = EventFeed(client, last_id=since)
        shown = 0
        async with contextlib.aclosing(feed.events()) as events:
            async for event in events:
                if topics and not any(topic_matches(p, event.topic) for p in topics):
                    continue
                record: Any = {"id": event.id, **event.envelope}
                line = (
                    json.dumps(record, ensure_ascii=False)
                    if output is Format.JSON
                    else event_line(event)
                )
                print(line, flush=True)
                shown += 1
                if count is not None and shown >= count:
                    return


@app.command()
def tail(
    topic: Annotated[
        list[str] | None,
        typer.Option(
            "--topic",
            "-t",
            help="Only topics matching this pattern (`instance.*`, `quota.#`); repeatable.",
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(help="Start after this event id (Last-Event-ID) instead of from now."),
    ] = None,
    count: Annotated[int | None, typer.Option(help="Exit after this many events.")] = None,
    output: OutputOption = Format.TABLE,
) -> None:
    """Print events as they come, one a line (-o json: each CloudEvent as a JSON line, with its
    stream id), until Ctrl-C. Reconnects by itself, losing nothing, if the stream ends."""
    settings = context.logged_in()
    try:
        asyncio.run(_tail(settings, topic or [], since, count, output))
    except KeyboardInterrupt:
        raise CliError("Stopped.", ExitCode.INTERRUPTED) from None
