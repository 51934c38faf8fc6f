"""The simulated cloud's state rules, with no I/O and a clock the test chooses."""

from datetime import UTC, datetime, timedelta

import pytest

from shared.clouds.simulator.model import IncorrectState, Timings, effective_state, next_state

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TIMINGS = Timings(boot=5, stop=2, reboot=3, terminate=4)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("state", "elapsed", "expected"),
    [
        ("pending", 4.9, "pending"),
        ("pending", 5, "running"),
        ("starting", 5, "running"),
        ("stopping", 1.9, "stopping"),
        ("stopping", 2, "stopped"),
        ("rebooting", 3, "running"),
        ("terminating", 4, "terminated"),
        ("running", 10_000, "running"),
        ("stopped", 10_000, "stopped"),
        ("terminated", 10_000, "terminated"),
        ("error", 10_000, "error"),
    ],
)
def test_states_settle_after_their_timing(state: str, elapsed: float, expected: str) -> None:
    assert effective_state(state, T0, at(elapsed), TIMINGS)[0] == expected


def test_settled_state_dates_from_the_end_of_the_transition() -> None:
    assert effective_state("pending", T0, at(60), TIMINGS) == ("running", at(5))


@pytest.mark.parametrize(
    ("action", "current", "entered"),
    [
        ("stop", "running", "stopping"),
        ("start", "stopped", "starting"),
        ("reboot", "running", "rebooting"),
        ("destroy", "running", "terminating"),
        ("destroy", "pending", "terminating"),
        ("destroy", "stopped", "terminating"),
    ],
)
def test_allowed_actions(action: str, current: str, entered: str) -> None:
    assert next_state(action, current) == entered


@pytest.mark.parametrize(
    ("action", "current"),
    [("stop", "stopped"), ("start", "running"), ("reboot", "pending"), ("destroy", "terminated")],
)
def test_refused_actions(action: str, current: str) -> None:
    with pytest.raises(IncorrectState, match=f"cannot {action}"):
        next_state(action, current)
