"""The simulated cloud's rules, pure: account settings, node states over time, allowed actions.

A node stores the state it entered and when; what it is *now* follows from the account's timings
(``effective_state``), so no timer runs per node and 100,000 nodes cost nothing while idle.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field


class Size(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    cpus: int
    ram_mb: int
    disk_gb: int = 20
    price_per_hour: float = 0.0


class Image(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    name: str


class Timings(BaseModel):
    """Seconds each transition takes."""

    model_config = ConfigDict(frozen=True)

    boot: float = Field(default=2.0, ge=0)
    stop: float = Field(default=1.0, ge=0)
    reboot: float = Field(default=1.0, ge=0)
    terminate: float = Field(default=1.0, ge=0)


DEFAULT_SIZES = (
    Size(id="sim.small", cpus=1, ram_mb=1024, price_per_hour=0.01),
    Size(id="sim.medium", cpus=2, ram_mb=4096, price_per_hour=0.04),
    Size(id="sim.large", cpus=4, ram_mb=16384, price_per_hour=0.16),
    Size(id="sim.xlarge", cpus=16, ram_mb=65536, price_per_hour=0.64),
)
DEFAULT_IMAGES = (
    Image(id="img-debian-12", name="debian-12"),
    Image(id="img-ubuntu-24.04", name="ubuntu-24.04"),
    Image(id="img-alpine-3", name="alpine-3"),
)


class AccountSettings(BaseModel):
    """What an account of the simulated cloud offers and how it misbehaves."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    regions: tuple[str, ...] = ("north", "south")
    sizes: tuple[Size, ...] = DEFAULT_SIZES
    images: tuple[Image, ...] = DEFAULT_IMAGES
    timings: Timings = Timings()
    # Live (not terminated) nodes the account holds at most; None: no limit.
    capacity: int | None = Field(default=None, ge=0)
    # Share of create calls that fail as if the provider had an outage (0 to 1).
    create_failure_rate: float = Field(default=0.0, ge=0, le=1)
    # Running nodes die at random, this many times per node-hour on average (0: never).
    deaths_per_hour: float = Field(default=0.0, ge=0)
    # How long terminated nodes stay listed, as on EC2.
    terminated_retention: float = Field(default=3600.0, ge=0)
    # Seconds every cloud API call waits before it answers.
    api_latency: float = Field(default=0.0, ge=0)
    # Calls per second the account may make (a token bucket holding api_burst); None: no limit.
    api_rate: float | None = Field(default=None, gt=0)
    api_burst: int = Field(default=10, ge=1)


LIVE = frozenset(
    {"pending", "running", "stopping", "stopped", "starting", "rebooting", "terminating"}
)
_SETTLES_INTO = {
    "pending": ("boot", "running"),
    "starting": ("boot", "running"),
    "stopping": ("stop", "stopped"),
    "rebooting": ("reboot", "running"),
    "terminating": ("terminate", "terminated"),
}
# action → (states it may start from, state it enters)
ACTIONS = {
    "stop": (frozenset({"running"}), "stopping"),
    "start": (frozenset({"stopped"}), "starting"),
    "reboot": (frozenset({"running"}), "rebooting"),
    "destroy": (LIVE, "terminating"),
}


def effective_state(
    state: str,
    since: datetime,
    now: datetime,
    timings: Timings,
    *,
    node_id: str = "",
    deaths_per_hour: float = 0.0,
) -> tuple[str, datetime]:
    """The state a node is in at ``now``, and since when (random deaths included)."""
    transition = _SETTLES_INTO.get(state)
    if transition is not None:
        timing, settled = transition
        done_at = since + timedelta(seconds=getattr(timings, timing))
        if now < done_at:
            return state, since
        state, since = settled, done_at
    if state == "running" and deaths_per_hour > 0:
        died_at = since + timedelta(seconds=lifetime(node_id, since, deaths_per_hour))
        if now >= died_at:
            return "terminated", died_at
    return state, since


def lifetime(node_id: str, running_since: datetime, deaths_per_hour: float) -> float:
    """Seconds a running node lives: exponential, but fixed for a node and its running spell, so
    every reader (and every restart of the simulator) agrees on when it died."""
    seed = f"{node_id}@{running_since.isoformat()}"
    return random.Random(seed).expovariate(deaths_per_hour / 3600)


class IncorrectState(Exception):
    pass


def next_state(action: str, current: str) -> str:
    allowed, entered = ACTIONS[action]
    if current not in allowed:
        raise IncorrectState(f"cannot {action} a node that is {current}")
    return entered
