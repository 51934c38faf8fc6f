"""From a provider account (provider name, opened credentials, config) to a libcloud driver.

The scheduler and the poller call this with credentials opened in memory for the call, and the
gateway with an admin's new credentials, to check them with the cloud before it stores them.
Provider-specific differences Boreas cares about (where tags live, what a state means) are here,
so placement and polling stay provider-neutral.
"""

from __future__ import annotations

from typing import Any

from libcloud.compute.base import Node, NodeDriver
from libcloud.compute.providers import get_driver
from libcloud.compute.types import NodeState, Provider

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
    if provider == "openstack":
        return get_driver(Provider.OPENSTACK)(
            credentials.get("username", ""),
            credentials.get("password", ""),
            ex_force_auth_url=config.get("auth_url"),
            ex_force_auth_version=config.get("auth_version", "3.x_password"),
            ex_tenant_name=config.get("tenant"),
            ex_force_service_type=config.get("service_type", "compute"),
            ex_force_service_name=config.get("service_name"),
            ex_force_service_region=config.get("service_region"),
            secure=str(config.get("auth_url", "")).startswith("https"),
        )
    try:
        driver_class = get_driver(provider)
    except AttributeError as exc:
        raise UnsupportedProvider(f"libcloud has no compute driver named {provider!r}") from exc
    return driver_class(**credentials, **config.get("driver_args", {}))


def nodes_tagged(driver: NodeDriver, key: str, value: str) -> list[Node]:
    """Nodes whose tag ``key`` is ``value``, asking the cloud to filter where it can (the
    simulated cloud and EC2 can), so the answer does not grow with the account. Blocking."""
    if isinstance(driver, SimulatorNodeDriver):
        nodes = driver.ex_list_nodes_tagged(key, value)
    elif isinstance(driver, CompatibleEC2NodeDriver):
        # libcloud annotates ex_filters as a string; the driver takes (and documents) a dict.
        nodes = driver.list_nodes(ex_filters={f"tag:{key}": value})  # type: ignore[arg-type]
    else:
        nodes = driver.list_nodes()
    return [n for n in nodes if tags_of(n).get(key) == value]


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


def region_of(driver: NodeDriver) -> str | None:
    """The one region a driver is bound to (EC2's region, OpenStack's service region), if any."""
    connection = driver.connection
    region = (
        getattr(driver, "region_name", None)
        # libcloud keeps the OpenStack region it was told to use only under this name.
        or getattr(connection, "_ex_force_service_region", None)
        or getattr(connection, "service_region", None)
    )
    return str(region) if region else None
