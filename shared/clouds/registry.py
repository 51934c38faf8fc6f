"""From a provider account (provider name, opened credentials, config) to a libcloud driver.

Only the scheduler and the poller call this, with credentials opened in memory for the call.
Provider-specific differences Boreas cares about (where tags live, what a state means) are here,
so placement and polling stay provider-neutral.
"""

from __future__ import annotations

from typing import Any

from libcloud.compute.base import Node, NodeDriver
from libcloud.compute.providers import get_driver
from libcloud.compute.types import NodeState

from shared.clouds.ec2 import CompatibleEC2NodeDriver
from shared.clouds.simulator.driver import DEFAULT_ENDPOINT, SimulatorNodeDriver

BOREAS_TAG = "boreas-instance"


class UnsupportedProvider(ValueError):
    pass


def build_driver(
    provider: str,
    credentials: dict[str, str],
    config: dict[str, Any],
    *,
    simulator_url: str | None = None,
) -> NodeDriver:
    """A connected driver for the account. Blocking (libcloud is synchronous): call in a thread."""
    if provider == "simulator":
        driver = SimulatorNodeDriver(
            credentials.get("api_key", ""),
            credentials.get("api_secret", ""),
            endpoint=config.get("endpoint") or simulator_url or DEFAULT_ENDPOINT,
        )
        behaviour = dict(config.get("simulator", {}))
        if "regions" in config:
            behaviour.setdefault("regions", config["regions"])
        driver.ex_ensure_account(behaviour)
        return driver
    if provider == "ec2":
        return CompatibleEC2NodeDriver(
            credentials.get("key", ""),
            credentials.get("secret", ""),
            region=config.get("region", "us-east-1"),
            endpoint=config.get("endpoint"),
        )
    try:
        driver_class = get_driver(provider)
    except AttributeError as exc:
        raise UnsupportedProvider(f"libcloud has no compute driver named {provider!r}") from exc
    return driver_class(**credentials, **config.get("driver_args", {}))


def tags_of(node: Node) -> dict[str, str]:
    return node.extra.get("tags") or node.extra.get("metadata") or {}


def boreas_instance_of(node: Node) -> str | None:
    return tags_of(node).get(BOREAS_TAG)


# libcloud's portable states → Boreas instance states. The simulator's extra["state"] is exact.
_FROM_LIBCLOUD = {
    NodeState.PENDING: "pending",
    NodeState.STARTING: "pending",
    NodeState.RUNNING: "running",
    NodeState.REBOOTING: "rebooting",
    NodeState.STOPPING: "running",
    NodeState.STOPPED: "stopped",
    NodeState.SUSPENDED: "stopped",
    NodeState.PAUSED: "stopped",
    NodeState.TERMINATED: "terminated",
    NodeState.ERROR: "error",
}
_FROM_SIMULATOR = {
    "pending": "pending",
    "starting": "pending",
    "running": "running",
    "stopping": "running",
    "stopped": "stopped",
    "rebooting": "rebooting",
    "terminating": "terminating",
    "terminated": "terminated",
    "error": "error",
}


def boreas_state(node: Node) -> str | None:
    """The Boreas state of a node, or None when the provider's state says nothing definite."""
    exact = node.extra.get("state") if isinstance(node.driver, SimulatorNodeDriver) else None
    if exact in _FROM_SIMULATOR:
        return _FROM_SIMULATOR[exact]
    return _FROM_LIBCLOUD.get(node.state)
