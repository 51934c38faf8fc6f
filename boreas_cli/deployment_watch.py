"""Following a deployment until it settles: deployment.state_changed and its instances' events
arrive on GET /v1/events, and each one re-reads the deployment (the gateway's answer is the
authority). The deployment is also re-read every few seconds while the stream is quiet, so an
event of an instance not yet known to be a member (a scale up) is never waited for in vain."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn

from boreas_cli.client import TIMEOUT, USER_AGENT, auth_headers, failure_of, unreachable
from boreas_cli.config import Settings
from boreas_cli.errors import CliError, ExitCode
from boreas_cli.events import Event, EventFeed
from boreas_cli.output import Format, when
from boreas_cli.watch import FAILED as FAILED_INSTANCE
from boreas_cli.watch import SETTLED as SETTLED_INSTANCE

# A deployment's states (docs/deployments.md).
SETTLED = frozenset({"running", "degraded", "failed", "deleted", "rejected"})
WENT_WRONG = frozenset({"degraded", "failed", "rejected"})
ENDED = frozenset({"failed", "deleted", "rejected"})
# Instances of a deployment that no longer count towards its groups.
GONE = frozenset({"terminated", "rejected", "denied", "error"})
# How often the deployment is re-read while no event concerns it.
POLL_SECONDS = 5.0

Deployment = dict[str, Any]
Done = Callable[[Deployment], bool]


def members(deployment: Deployment) -> list[dict[str, Any]]:
    """Every instance of the deployment, each with its group's name as ``group``."""
    return [
        {"group": group.get("name"), **instance}
        for group in deployment.get("groups") or []
        for instance in group.get("instances") or []
    ]


def names_of_failed(deployment: Deployment) -> list[str]:
    """The failed instances' names (their ids where the deployment no longer lists them)."""
    names = {str(m.get("id")): str(m.get("name")) for m in members(deployment)}
    return [names.get(str(i), str(i)) for i in deployment.get("failed") or []]


def settled(deployment: Deployment) -> bool:
    """Done with what it was asked: in a settled state and, unless it ended, none of its
    instances still changing (a running deployment being scaled is not settled)."""
    state = deployment.get("state")
    if state in ENDED:
        return True
    return state in SETTLED and all(m.get("state") in SETTLED_INSTANCE for m in members(deployment))


def scaled(group: str, count: int, known: set[str]) -> Done:
    """Done once ``group`` has ``count`` instances that are not gone, none of them changing, or
    once that cannot happen: the deployment ended, or an instance added since (not in
    ``known``) went wrong."""

    def done(deployment: Deployment) -> bool:
        if deployment.get("state") in ENDED:
            return True
        mine = [m for m in members(deployment) if m["group"] == group]
        if any(m.get("state") not in SETTLED_INSTANCE for m in mine):
            return False
        live = [m for m in mine if m.get("state") not in GONE]
        added_failed = [
            m for m in mine if str(m.get("id")) not in known and m.get("state") in FAILED_INSTANCE
        ]
        return len(live) == count or bool(added_failed)

    return done


def why(deployment: Deployment) -> str | None:
    """Its reason and failed instances, when it has any."""
    said = [str(deployment["reason"])] if deployment.get("reason") else []
    failed = names_of_failed(deployment)
    if failed:
        said.append(f"failed: {', '.join(failed)}")
    return "; ".join(said) or None


def problem_with(deployment: Deployment) -> str | None:
    """What went wrong, when it did: the state, its reason and the failed instances."""
    state = deployment.get("state")
    if state not in WENT_WRONG:
        return None
    reasons = why(deployment)
    return f"{deployment.get('name')} is {state}" + (f" ({reasons})" if reasons else "")


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def change_lines(now: Deployment, before: Deployment | None) -> list[str]:
    """A line for each instance's change of state and one for the deployment's, as a person
    reads them: the deployment first when there was nothing before (everything as it is), else
    after its instances' changes, which are what moved it."""
    own = _deployment_line(now, before)
    changed = _member_lines(now, before)
    return own + changed if before is None else changed + own


def _deployment_line(now: Deployment, before: Deployment | None) -> list[str]:
    """The deployment's own line, when it is new or its state moved (none otherwise)."""
    old_state = None if before is None else before.get("state")
    if before is not None and now.get("state") == old_state:
        return []
    state = now.get("state") if old_state is None else f"{old_state} → {now.get('state')}"
    line = f"{when(now.get('updated_at'))}  {now.get('name')}  {now.get('id')}  {state}"
    reasons = why(now)
    if reasons and now.get("state") in WENT_WRONG | {"deleting", "deleted"}:
        line += f"  ({reasons})"
    return [line]


def _member_lines(now: Deployment, before: Deployment | None) -> list[str]:
    """A line per instance that is new or whose state moved since ``before``."""
    earlier = {str(m.get("id")): m.get("state") for m in members(before or {})}
    lines = []
    for member in members(now):
        old = earlier.get(str(member.get("id")))
        if before is not None and old == member.get("state"):
            continue
        state = member.get("state") if old is None else f"{old} → {member.get('state')}"
        at = when(member.get("updated_at") or _now())
        lines.append(f"{at}  {member.get('name')}  {member.get('group')}  {state}")
    return lines


class Display:
    """Change lines (table) or the deployment as a JSON line whenever it changed (json) on
    stdout; a spinner on stderr while a person watches."""

    def __init__(self, output: Format) -> None:
        self.output = output
        self.progress: Progress | None = None

    @contextlib.contextmanager
    def shown(self, deployment: Deployment) -> Iterator[Display]:
        if self.output is Format.TABLE and sys.stderr.isatty():
            self.progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                console=Console(stderr=True),
                transient=True,
                redirect_stdout=sys.stdout.isatty(),
            )
            with self.progress:
                self.task = self.progress.add_task(self._spinner(deployment), total=None)
                yield self
        else:
            yield self

    @staticmethod
    def _spinner(deployment: Deployment) -> str:
        found = members(deployment)
        running = sum(1 for m in found if m.get("state") == "running")
        return (
            f"{deployment.get('name')}  {deployment.get('state')}  {running}/{len(found)} running"
        )

    def show(self, now: Deployment, before: Deployment | None) -> None:
        if self.output is Format.JSON:
            if before is None or _shown_part(now) != _shown_part(before):
                print(json.dumps(now, ensure_ascii=False), flush=True)
        else:
            for line in change_lines(now, before):
                print(line, flush=True)
        if self.progress is not None:
            self.progress.update(self.task, description=self._spinner(now))


def _shown_part(deployment: Deployment) -> Any:
    """What a change is a change of: the state, reason, failed instances and members' states."""
    return (
        deployment.get("state"),
        deployment.get("reason"),
        deployment.get("failed"),
        [(m.get("id"), m.get("state")) for m in members(deployment)],
    )


def concerns(event: Event, deployment: Deployment) -> bool:
    """Whether ``event`` is about the deployment or one of its instances."""
    subject = str(event.subject)
    if subject == str(deployment.get("id")):
        return True
    if str(event.data.get("deployment_id")) == str(deployment.get("id")):
        return True
    return subject in {str(m.get("id")) for m in members(deployment)}


def client(settings: Settings) -> httpx.AsyncClient:
    """The client a watch talks to the gateway with (tests give it another transport)."""
    headers = {"User-Agent": USER_AGENT, **auth_headers(settings.token)}
    return httpx.AsyncClient(base_url=settings.url, headers=headers, timeout=TIMEOUT)


async def _fetch(http: httpx.AsyncClient, deployment_id: str) -> Deployment:
    try:
        response = await http.get(f"/v1/deployments/{deployment_id}")
    except httpx.TransportError as error:
        raise unreachable(str(http.base_url), error) from None
    if response.is_error:
        raise failure_of(response)
    found: Deployment = response.json()
    return found


async def follow(
    settings: Settings,
    deployment_id: str,
    *,
    done: Done,
    output: Format,
    timeout: float | None,
) -> Deployment:
    """Show the deployment's changes until ``done`` says so; the deployment as it then is."""
    async with client(settings) as http:
        feed = EventFeed(http)
        # The stream first, then the deployment: a change between the two is on the stream.
        await feed.open()
        current: Deployment | None = None
        try:
            async with asyncio.timeout(timeout):
                current = await _fetch(http, deployment_id)
                display = Display(output)
                with display.shown(current):
                    display.show(current, None)
                    if not done(current):
                        current = await _until_done(http, feed, current, display, done)
        except TimeoutError:
            if timeout is None:
                raise
            state = "not read yet" if current is None else f"still {current.get('state')}"
            raise CliError(
                f"Not settled after {timeout:g} s: {deployment_id} is {state}.", ExitCode.FAILURE
            ) from None
        finally:
            await feed.close()
    assert current is not None
    return current


async def _until_done(
    http: httpx.AsyncClient,
    feed: EventFeed,
    current: Deployment,
    display: Display,
    done: Done,
) -> Deployment:
    arrived: asyncio.Queue[Event | Exception] = asyncio.Queue()

    async def read() -> None:
        try:
            async with contextlib.aclosing(feed.events()) as events:
                async for event in events:
                    arrived.put_nowait(event)
        except Exception as failure:  # the stream is gone for good: say why in the watch
            arrived.put_nowait(failure)

    reader = asyncio.create_task(read())
    try:
        while True:
            try:
                event = await asyncio.wait_for(arrived.get(), POLL_SECONDS)
            except TimeoutError:
                event = None  # quiet for a while: read it again anyway
            if isinstance(event, Exception):
                raise event
            if event is not None and not concerns(event, current):
                continue
            now = await _fetch(http, str(current["id"]))
            display.show(now, current)
            current = now
            if done(current):
                return current
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


def run_watch(
    settings: Settings,
    deployment_id: str,
    *,
    done: Done = settled,
    target: frozenset[str] | None = None,
    output: Format,
    timeout: float | None,
) -> Deployment:
    """Watch, then fail (exit 1) if the deployment went wrong, or ended elsewhere than
    ``target``."""
    try:
        final = asyncio.run(
            follow(settings, deployment_id, done=done, output=output, timeout=timeout)
        )
    except KeyboardInterrupt:
        raise CliError(
            "Stopped watching (the deployment carries on).", ExitCode.INTERRUPTED
        ) from None
    problem = problem_with(final)
    if problem is not None:
        raise CliError(problem, ExitCode.FAILURE)
    if target is not None and final.get("state") not in target:
        raise CliError(f"{final.get('name')} is {final.get('state')}.", ExitCode.FAILURE)
    return final
