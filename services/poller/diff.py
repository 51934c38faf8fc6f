"""What changed between what the poller knew and what the cloud lists now. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

FINAL = frozenset({"terminated"})
# States a node leaves on its own, soon: while one is in them, its account is polled fast.
TRANSITIONAL = frozenset({"pending", "rebooting", "terminating"})


@dataclass(frozen=True)
class Known:
    instance_id: str
    provider_instance_id: str
    state: str


@dataclass(frozen=True)
class Seen:
    provider_instance_id: str
    boreas_instance: str | None  # the instance id tag, None for nodes Boreas did not create
    state: str | None  # None: the provider's state says nothing definite right now


@dataclass(frozen=True)
class Transition:
    instance_id: str
    provider_instance_id: str
    old_state: str
    new_state: str


@dataclass(frozen=True)
class Diff:
    transitions: tuple[Transition, ...]
    unmanaged: tuple[str, ...]  # provider ids of nodes that appeared outside Boreas


def diff(known: Iterable[Known], seen: Iterable[Seen], managed_ids: Mapping[str, str]) -> Diff:
    """``managed_ids``: instance id by provider id for everything Boreas placed on the account,
    including instances not yet in ``known``; their nodes are Boreas', not unmanaged."""
    listed = {s.provider_instance_id: s for s in seen}
    transitions = [t for instance in known if (t := _transition(instance, listed)) is not None]
    return Diff(tuple(transitions), _unmanaged(listed.values(), managed_ids))


def _transition(instance: Known, listed: Mapping[str, Seen]) -> Transition | None:
    """How the instance moved, if it did: a node no longer listed has terminated; a node whose
    state says nothing definite has not moved."""
    if instance.state in FINAL:
        return None
    node = listed.get(instance.provider_instance_id)
    new_state = "terminated" if node is None else node.state
    if new_state is None or new_state == instance.state:
        return None
    return Transition(
        instance.instance_id, instance.provider_instance_id, instance.state, new_state
    )


def _unmanaged(listed: Iterable[Seen], managed_ids: Mapping[str, str]) -> tuple[str, ...]:
    """Provider ids, sorted, of live nodes Boreas neither tagged nor placed."""
    return tuple(
        sorted(
            s.provider_instance_id
            for s in listed
            if s.boreas_instance is None
            and s.provider_instance_id not in managed_ids
            and s.state not in FINAL
        )
    )


def changing(states: Iterable[str], expecting_change: bool) -> bool:
    """Whether an account needs its fast interval: an instance is in transition, or an action
    was asked for whose effect has not shown yet."""
    return expecting_change or any(state in TRANSITIONAL for state in states)
