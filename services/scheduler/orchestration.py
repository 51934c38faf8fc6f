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
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from shared.templates import Template


class MemberState(enum.StrEnum):
    WAITING = "waiting"  # admitted with the deployment, not launched yet
    LAUNCHING = "launching"  # launch asked, not running yet
    RUNNING = "running"
    FAILED = "failed"  # failed to launch, or in error (its node, if any, is still there)
    TERMINATING = "terminating"
    TERMINATED = "terminated"
    CANCELLED = "cancelled"  # never launched: its reservation is given back


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
    by_group = _by_group(template, members)
    if deleting:
        return _deleting(template, by_group)
    failed = [m for m in members if m.failure is not None]
    if failed and template.on_failure == "rollback":
        return _rolling_back(members, failed)
    return _creating(template, by_group, failed)


def _creating(template: Template, by_group: _Grouped, failed: list[Member]) -> Steps:
    ready = {g for g, ms in by_group.items() if ms and all(_up(m) for m in ms)}
    blocked = _blocked_by(template, {m.group for m in failed})
    startable = [g.name for g in template.groups if set(g.after) <= ready and g.name not in blocked]
    launch = _waiting(by_group, startable)
    cancel = _waiting(by_group, [g.name for g in template.groups if g.name in blocked])
    members = [m for ms in by_group.values() for m in ms]
    if launch or any(m.state is MemberState.LAUNCHING for m in members):
        return Steps(DeploymentState.CREATING, launch=launch, cancel=cancel)
    if failed:
        return Steps(
            DeploymentState.DEGRADED,
            cancel=cancel,
            reason=_failure_reason(failed, blocked),
            failed=tuple(m.instance_id for m in failed),
        )
    if all(m.state in (MemberState.RUNNING, MemberState.CANCELLED) for m in members):
        return Steps(DeploymentState.RUNNING)
    return Steps(DeploymentState.CREATING)


def _up(member: Member) -> bool:
    return member.state is MemberState.RUNNING


def _waiting(by_group: _Grouped, groups: Iterable[str]) -> tuple[uuid.UUID, ...]:
    return tuple(
        m.instance_id for g in groups for m in by_group[g] if m.state is MemberState.WAITING
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
