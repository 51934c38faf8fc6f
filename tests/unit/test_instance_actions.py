"""Every (state, action) pair: allowed or refused, and what the instance shows meanwhile."""

from __future__ import annotations

import pytest

from services.gateway.instance_actions import (
    Decision,
    NothingToDo,
    Proceed,
    Refused,
    Withdraw,
    decide,
)
from shared.events import InstanceAction as A
from shared.events import InstanceState as S

# Written out in full so that a new state or action fails here until someone decides about it.
EXPECTED: dict[tuple[S, A], Decision | type[Refused]] = {
    (S.REQUESTED, A.STOP): Refused,
    (S.REQUESTED, A.START): Refused,
    (S.REQUESTED, A.REBOOT): Refused,
    (S.REQUESTED, A.TERMINATE): Proceed(S.TERMINATING),
    (S.REJECTED, A.STOP): Refused,
    (S.REJECTED, A.START): Refused,
    (S.REJECTED, A.REBOOT): Refused,
    (S.REJECTED, A.TERMINATE): NothingToDo(),
    (S.PENDING, A.STOP): Refused,
    (S.PENDING, A.START): Refused,
    (S.PENDING, A.REBOOT): Refused,
    (S.PENDING, A.TERMINATE): Proceed(S.TERMINATING),
    (S.RUNNING, A.STOP): Proceed(None),
    (S.RUNNING, A.START): Refused,
    (S.RUNNING, A.REBOOT): Proceed(S.REBOOTING),
    (S.RUNNING, A.TERMINATE): Proceed(S.TERMINATING),
    (S.STOPPED, A.STOP): Refused,
    (S.STOPPED, A.START): Proceed(None),
    (S.STOPPED, A.REBOOT): Refused,
    (S.STOPPED, A.TERMINATE): Proceed(S.TERMINATING),
    (S.REBOOTING, A.STOP): Refused,
    (S.REBOOTING, A.START): Refused,
    (S.REBOOTING, A.REBOOT): Refused,
    (S.REBOOTING, A.TERMINATE): Proceed(S.TERMINATING),
    (S.TERMINATING, A.STOP): Refused,
    (S.TERMINATING, A.START): Refused,
    (S.TERMINATING, A.REBOOT): Refused,
    (S.TERMINATING, A.TERMINATE): NothingToDo(),
    (S.TERMINATED, A.STOP): Refused,
    (S.TERMINATED, A.START): Refused,
    (S.TERMINATED, A.REBOOT): Refused,
    (S.TERMINATED, A.TERMINATE): NothingToDo(),
    (S.ERROR, A.STOP): Refused,
    (S.ERROR, A.START): Refused,
    (S.ERROR, A.REBOOT): Refused,
    (S.ERROR, A.TERMINATE): Proceed(S.TERMINATING),
    (S.AWAITING_APPROVAL, A.STOP): Refused,
    (S.AWAITING_APPROVAL, A.START): Refused,
    (S.AWAITING_APPROVAL, A.REBOOT): Refused,
    (S.AWAITING_APPROVAL, A.TERMINATE): Withdraw(),
    (S.DENIED, A.STOP): Refused,
    (S.DENIED, A.START): Refused,
    (S.DENIED, A.REBOOT): Refused,
    (S.DENIED, A.TERMINATE): NothingToDo(),
}


def test_every_state_and_action_is_decided_here() -> None:
    assert set(EXPECTED) == {(state, action) for state in S for action in A}


@pytest.mark.parametrize(("state", "action"), list(EXPECTED), ids=lambda v: v.value)
def test_decision(state: S, action: A) -> None:
    expected = EXPECTED[(state, action)]
    decision = decide(state, action)
    if expected is Refused:
        assert decision == Refused(f"Cannot {action.value} an instance that is {state.value}.")
    else:
        assert decision == expected
