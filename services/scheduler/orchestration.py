"""Deployments, pure: given what is known of a deployment's instances, what to do next.

Level-triggered on purpose: :func:`next_steps` looks at the whole deployment as it stands and
says which instances to launch, which to terminate and which state the deployment is in. It
never remembers what it asked before, so it can run after every event, twice, or after a
restart, and asks for nothing twice as long as its caller records what it asked (a member asked
to launch is ``LAUNCHING`` from then on, one asked to end is ``TERMINATING``).

- Groups start in waves (``Template.start_order``): a group's members launch once every member
  of each group in its ``after`` is running.
- A member that fails: ``rollback`` terminates every member still alive and ends ``failed``;
  ``keep`` launches nothing that depends on the failed group, lets the rest settle and ends
  ``degraded``, naming the failed members.
- Members that will never launch (rollback, deletion, or waiting for a failed group under
  ``keep``) are cancelled: the caller gives their reservations back.
- Deleting terminates the last wave first, each wave once the later ones are gone, and ends
  ``deleted``.
- A member held for approval waits like any other but is not launched until approved; one
  denied rolls the whole deployment back, whatever ``on_failure`` says.
- A member removed by scaling down is terminated (or cancelled, never launched) and counts no
  more towards its group.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from shared.templates import Template


class MemberState(enum.StrEnum):
    WAITING = "waiting"  # admitted with the deployment, not launched yet
    LAUNCHING = "launching"  # launch asked, not running yet
    RUNNING = "running"
    FAILED = "failed"  # failed to launch, or in error (its node, if any, is still there)
    TERMINATING = "terminating"
    TERMINATED = "terminated"
    CANCELLED = "cancelled"  # never launched: its reservation is given back
    NOT_LAUNCHED = "not_launched"  # its launch failed: no node anywhere, nothing to end
    DENIED = "denied"  # held for approval and denied: never launched, quota released it


# What an instance event makes of a member (see :func:`observed`).
_FINAL_MEMBER = frozenset(
    {
        MemberState.TERMINATED,
        MemberState.CANCELLED,
        MemberState.NOT_LAUNCHED,
        MemberState.DENIED,
    }
)


# What a rollback or a deletion terminates: whatever may have a node.
_ENDABLE = frozenset({MemberState.LAUNCHING, MemberState.RUNNING, MemberState.FAILED})


class DeploymentState(enum.StrEnum):
    REQUESTED = "requested"
    REJECTED = "rejected"
    CREATING = "creating"
    RUNNING = "running"
    DEGRADED = "degraded"
    FAILED = "failed"
    DELETING = "deleting"
    DELETED = "deleted"


FINAL = frozenset({DeploymentState.REJECTED, DeploymentState.DELETED})


@dataclass(frozen=True)
class Member:
    instance_id: uuid.UUID
    group: str
    state: MemberState
    # Set once the member failed, and kept while a rollback terminates it.
    failure: str | None = None
    # Held for approval: waiting, but not launched until approved.
    held: bool = False
    # Removed by scaling down: ended, and no longer part of its group.
    removed: bool = False


@dataclass(frozen=True)
class Steps:
    """What to do now: launch these, terminate those, and the state the deployment is in."""

    state: DeploymentState
    launch: tuple[uuid.UUID, ...] = ()
    terminate: tuple[uuid.UUID, ...] = ()
    cancel: tuple[uuid.UUID, ...] = ()
    # Why the deployment is degraded or failed: the failed members and what failed them.
    reason: str | None = None
    failed: tuple[uuid.UUID, ...] = field(default=())


def next_steps(
    template: Template, state: DeploymentState, members: Iterable[Member], *, deleting: bool
) -> Steps:
    """What a deployment in ``state`` with ``members`` should do next."""
    members = tuple(members)
    if state in FINAL or state is DeploymentState.REQUESTED:
        return Steps(state)
    if deleting:
        return _deleting(template, _by_group(template, members))
    return _creating_or_rolling_back(template, members)


def _creating_or_rolling_back(template: Template, members: tuple[Member, ...]) -> Steps:
    """Rolling back after a failure that calls for it; else creating with the members kept,
    and ending those removed by scaling down."""
    kept = tuple(m for m in members if not m.removed)
    failed = [m for m in kept if m.failure is not None]
    if failed and _rolls_back(template, kept):
        return _rolling_back(members, failed)
    steps = _creating(template, _by_group(template, kept), failed)
    return _removing(steps, [m for m in members if m.removed])


def _rolls_back(template: Template, kept: tuple[Member, ...]) -> bool:
    """Whether a failure rolls the deployment back: under ``rollback``, and under any policy
    once a member is denied."""
    return template.on_failure == "rollback" or any(m.state is MemberState.DENIED for m in kept)


def _removing(steps: Steps, removed: list[Member]) -> Steps:
    """Members removed by scaling down: end those that may have a node, cancel the rest."""
    ending = tuple(m.instance_id for m in removed if m.state in _ENDABLE)
    cancel = tuple(m.instance_id for m in removed if m.state is MemberState.WAITING)
    if not ending and not cancel:
        return steps
    return replace(steps, terminate=steps.terminate + ending, cancel=steps.cancel + cancel)


def _creating(template: Template, by_group: _Grouped, failed: list[Member]) -> Steps:
    blocked = _blocked_by(template, {m.group for m in failed})
    launch = _waiting(by_group, _startable(template, by_group, blocked), held=False)
    cancel = _waiting(by_group, [g.name for g in template.groups if g.name in blocked])
    members = _all_members(by_group)
    if launch or any(m.state is MemberState.LAUNCHING for m in members):
        return Steps(DeploymentState.CREATING, launch=launch, cancel=cancel)
    if failed:
        return _degraded(failed, blocked, cancel)
    return _settled(members)


def _degraded(failed: list[Member], blocked: set[str], cancel: tuple[uuid.UUID, ...]) -> Steps:
    return Steps(
        DeploymentState.DEGRADED,
        cancel=cancel,
        reason=_failure_reason(failed, blocked),
        failed=tuple(m.instance_id for m in failed),
    )


def _startable(template: Template, by_group: _Grouped, blocked: set[str]) -> list[str]:
    """Groups whose ``after`` groups are all running, unless a failure blocks them."""
    ready = {g for g, ms in by_group.items() if ms and all(_up(m) for m in ms)}
    return [g.name for g in template.groups if set(g.after) <= ready and g.name not in blocked]


def _settled(members: list[Member]) -> Steps:
    """Nothing to launch, nothing launching, nothing failed: running once every member is."""
    if all(m.state in (MemberState.RUNNING, MemberState.CANCELLED) for m in members):
        return Steps(DeploymentState.RUNNING)
    return Steps(DeploymentState.CREATING)


def _up(member: Member) -> bool:
    return member.state is MemberState.RUNNING


def _waiting(
    by_group: _Grouped, groups: Iterable[str], *, held: bool = True
) -> tuple[uuid.UUID, ...]:
    """Members of ``groups`` not launched yet (without the held ones unless ``held``)."""
    return tuple(
        m.instance_id
        for g in groups
        for m in by_group[g]
        if m.state is MemberState.WAITING and (held or not m.held)
    )


def _blocked_by(template: Template, broken: set[str]) -> set[str]:
    """Groups that can never start because a group they wait for (directly or not) failed."""
    blocked: set[str] = set()
    for wave in template.start_order():
        for name in wave:
            if set(template.group(name).after) & (broken | blocked):
                blocked.add(name)
    return blocked


def _rolling_back(members: tuple[Member, ...], failed: list[Member]) -> Steps:
    reason = _failure_reason(failed, set())
    # A failed member may have left a node behind (a cloud error): it is terminated too.
    to_end = tuple(m.instance_id for m in members if m.state in _ENDABLE)
    cancel = tuple(m.instance_id for m in members if m.state is MemberState.WAITING)
    if to_end or cancel or any(m.state is MemberState.TERMINATING for m in members):
        return Steps(DeploymentState.CREATING, terminate=to_end, cancel=cancel, reason=reason)
    return Steps(DeploymentState.FAILED, reason=reason, failed=tuple(m.instance_id for m in failed))


def _deleting(template: Template, by_group: _Grouped) -> Steps:
    """The last wave first: a wave is terminated once every later wave is gone. Members never
    launched are cancelled at once, whatever their wave."""
    cancel = _waiting(by_group, by_group)
    for wave in reversed(template.start_order()):
        in_wave = [m for name in wave for m in by_group[name]]
        ending = tuple(m.instance_id for m in in_wave if m.state in _ENDABLE)
        if ending or any(m.state is MemberState.TERMINATING for m in in_wave):
            return Steps(DeploymentState.DELETING, terminate=ending, cancel=cancel)
    if cancel:
        return Steps(DeploymentState.DELETING, cancel=cancel)
    return Steps(DeploymentState.DELETED)


_Grouped = dict[str, list[Member]]


def _all_members(by_group: _Grouped) -> list[Member]:
    return [m for ms in by_group.values() for m in ms]


def _by_group(template: Template, members: tuple[Member, ...]) -> _Grouped:
    grouped: _Grouped = {g.name: [] for g in template.groups}
    for member in members:
        grouped.setdefault(member.group, []).append(member)
    return grouped


def _failure_reason(failed: list[Member], blocked: set[str]) -> str:
    named = "; ".join(f"{m.group} instance {m.instance_id} failed: {m.failure}" for m in failed)
    if blocked:
        named += f"; not started because a group they wait for failed: {', '.join(sorted(blocked))}"
    return named


def observed(state: MemberState, seen: str) -> MemberState:
    """A member's state once an instance event is seen: ``seen`` is the instance's new state
    (``running``, ``error``, ``terminated`` …) or ``failed`` (instance.failed: never placed).
    A final state stays; a member asked to end ends, whatever failed on the way."""
    if state in _FINAL_MEMBER:
        return state
    if seen == "terminated":
        return MemberState.TERMINATED
    if state is MemberState.TERMINATING:
        return MemberState.TERMINATED if seen == "failed" else state
    if seen == "failed":
        return MemberState.NOT_LAUNCHED
    if seen == "error":
        return MemberState.FAILED
    if seen == "running" and state is MemberState.LAUNCHING:
        return MemberState.RUNNING
    return state
