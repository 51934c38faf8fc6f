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


def test_random_deaths_are_reproducible_and_end_running_nodes() -> None:
    kwargs = {"node_id": "sim-1", "deaths_per_hour": 3600.0}  # one a second on average
    state, died_at = effective_state("pending", T0, at(10_000), TIMINGS, **kwargs)
    assert state == "terminated"
    assert at(5) < died_at < at(10_000)
    assert effective_state("pending", T0, at(10_000), TIMINGS, **kwargs) == (state, died_at)
    assert (
        effective_state("pending", T0, died_at - timedelta(microseconds=1), TIMINGS, **kwargs)[0]
        == "running"
    )


def test_without_a_death_rate_nodes_live_on() -> None:
    assert effective_state("running", T0, at(10**7), TIMINGS, node_id="sim-1")[0] == "running"
    assert (
        effective_state("stopped", T0, at(10**7), TIMINGS, node_id="s", deaths_per_hour=3600)[0]
        == "stopped"
    )
