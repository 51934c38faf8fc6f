"""Which action an instance's state allows, and what the instance shows while it happens. No I/O."""

from __future__ import annotations

from dataclasses import dataclass

from shared.events import InstanceAction, InstanceState

# Which states each action may start from, and the state the instance shows meanwhile (None: it
# keeps showing its state until the poller sees the cloud change it).
_STARTS_FROM: dict[InstanceAction, tuple[frozenset[InstanceState], InstanceState | None]] = {
    InstanceAction.STOP: (frozenset({InstanceState.RUNNING}), None),
    InstanceAction.START: (frozenset({InstanceState.STOPPED}), None),
    InstanceAction.REBOOT: (frozenset({InstanceState.RUNNING}), InstanceState.REBOOTING),
}
# Terminating these is already done or under way, so a second DELETE changes nothing.
_FINISHED = frozenset(
    {
        InstanceState.TERMINATED,
        InstanceState.REJECTED,
        InstanceState.TERMINATING,
        InstanceState.DENIED,
    }
)


@dataclass(frozen=True)
class Proceed:
    """Request the action; show ``shown`` meanwhile, or keep the state when it is None."""

    shown: InstanceState | None


@dataclass(frozen=True)
class NothingToDo:
    """The action's outcome is already reached or under way: answer with the instance as it is."""


@dataclass(frozen=True)
class Withdraw:
    """Terminating a launch held for approval: it never reached a cloud, so it is denied (by
    whoever asked) rather than terminated, and quota releases its reservation."""


@dataclass(frozen=True)
class Refused:
    """The state does not allow the action; ``reason`` says so to the caller."""

    reason: str


Decision = Proceed | NothingToDo | Withdraw | Refused


def decide(state: InstanceState, action: InstanceAction) -> Decision:
    """What asking for ``action`` on an instance that is ``state`` comes to."""
    if action is InstanceAction.TERMINATE:
        if state in _FINISHED:
            return NothingToDo()
        if state is InstanceState.AWAITING_APPROVAL:
            return Withdraw()
        return Proceed(InstanceState.TERMINATING)
    allowed, shown = _STARTS_FROM[action]
    if state not in allowed:
        return Refused(f"Cannot {action.value} an instance that is {state.value}.")
    return Proceed(shown)
