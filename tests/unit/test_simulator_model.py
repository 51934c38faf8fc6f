"""The simulated cloud's state rules and how it renders nodes, with no I/O and a clock the test
chooses."""

import json
from datetime import UTC, datetime, timedelta

import pytest

from shared.clouds.simulator.listing import node_json, nodes_json
from shared.clouds.simulator.model import (
    AccountSettings,
    IncorrectState,
    Timings,
    effective_state,
    next_state,
)

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


def row(state: str, since: datetime, *, name: str = "web-1", node_id: str = "sim-1") -> dict:
    """A row as PostgreSQL gives it for listing.NODE_COLUMNS."""
    return {
        "id": node_id,
        "name": name,
        "state": state,
        "since": since,
        "size_id": "sim.small",
        "image_id": "img-debian-12",
        "region": "north",
        "tags": '{"boreas-instance": "i-1"}',
        "since_text": since.isoformat(),
        "created_at_text": T0.isoformat(),
        "address_byte": 7,
    }


def listed(rows: list[dict], now: datetime, **settings: object) -> list[dict]:
    return json.loads(nodes_json(rows, AccountSettings.model_validate(settings), now))


def test_a_listed_node_has_the_api_shape() -> None:
    assert listed([row("running", at(3))], at(60)) == [
        {
            "id": "sim-1",
            "name": "web-1",
            "state": "running",
            "since": at(3).isoformat(),
            "size": "sim.small",
            "image": "img-debian-12",
            "region": "north",
            "tags": {"boreas-instance": "i-1"},
            "created_at": T0.isoformat(),
            "public_ips": ["198.51.100.7"],
        }
    ]


def test_listing_shows_states_as_they_are_now() -> None:
    nodes = listed(
        [row("pending", T0), row("terminating", T0, node_id="sim-2")],
        at(60),
        timings={"boot": 5, "terminate": 4},
    )
    assert [(n["state"], n["since"]) for n in nodes] == [
        ("running", at(5).isoformat()),
        ("terminated", at(4).isoformat()),
    ]
    assert [n["public_ips"] for n in nodes] == [["198.51.100.7"], []]


def test_terminated_nodes_are_listed_for_the_retention_only() -> None:
    rows = [row("terminated", at(10)), row("terminating", T0, node_id="sim-2")]
    settings = {"terminated_retention": 100, "timings": {"terminate": 1}}
    assert [n["id"] for n in listed(rows, at(105), **settings)] == ["sim-1"]
    assert listed(rows, at(111), **settings) == []
    one = node_json(rows[0], AccountSettings(terminated_retention=100), at(111))
    assert json.loads(one)["state"] == "terminated"


def test_random_deaths_show_in_listings() -> None:
    nodes = listed([row("running", T0)], at(600), deaths_per_hour=3600.0)  # ~1 s to live
    assert nodes[0]["state"] == "terminated"
    assert nodes[0]["public_ips"] == []


def test_any_name_renders_as_valid_json() -> None:
    name = 'a "quoted" \\ name\nwith ünïcode \u2028 and \x01'
    assert listed([row("running", T0, name=name)], at(1))[0]["name"] == name
