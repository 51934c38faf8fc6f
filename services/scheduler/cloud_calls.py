"""The scheduler's blocking cloud calls (libcloud is synchronous): run them in a thread."""

from __future__ import annotations

import uuid

from libcloud.compute.base import Node, NodeDriver, NodeImage
from libcloud.compute.types import NodeState

from services.scheduler.placement import Catalog, Offer, Size
from shared.clouds.registry import BOREAS_TAG, boreas_instance_of, boreas_state, region_of


def catalog_of(driver: NodeDriver) -> Catalog:
    sizes = tuple(
        Size(
            id=str(s.id),
            cpus=int(
                float(
                    getattr(s, "vcpus", None)
                    or _first(s.extra, "cpus", "vcpu", "vcpus", "cpu")
                    or 1
                )
            ),
            memory_mb=int(s.ram or 0),
            price=float(s.price or 0.0),
        )
        for s in driver.list_sizes()
    )
    images = {str(i.name): str(i.id) for i in driver.list_images() if i.name}
    # A driver bound to one region (EC2, OpenStack) offers that region; others list locations.
    region = region_of(driver)
    regions = (region,) if region else tuple(str(loc.id) for loc in driver.list_locations())
    return Catalog(sizes, images, regions)


def _first(extra: dict, *keys: str) -> object:
    return next((extra[k] for k in keys if extra.get(k) not in (None, "")), None)


def launch_node(
    driver: NodeDriver,
    offer: Offer,
    instance_id: uuid.UUID,
    name: str,
    extra_metadata: dict[str, str] | None = None,
) -> Node:
    """Create the node tagged with its Boreas id, unless a live one with that tag exists already
    (a retry after a crash between create and commit must not launch twice)."""
    for node in driver.list_nodes():
        if boreas_instance_of(node) == str(instance_id) and boreas_state(node) != "terminated":
            return node
    size = next(s for s in driver.list_sizes() if str(s.id) == offer.size.id)
    image = NodeImage(id=offer.image_id, name=None, driver=driver)
    location = next((loc for loc in driver.list_locations() if loc.id == offer.region), None)
    # Only drivers with locations take the argument (OpenStack's create_node refuses it).
    where = {"location": location} if location is not None else {}
    return driver.create_node(
        name=name,
        size=size,
        image=image,
        ex_metadata={**(extra_metadata or {}), BOREAS_TAG: str(instance_id)},
        **where,
    )


def act_on_node(driver: NodeDriver, provider_instance_id: str, action: str) -> None:
    node = Node(provider_instance_id, None, NodeState.UNKNOWN, [], [], driver)
    operation = {
        "stop": driver.stop_node,
        "start": driver.start_node,
        "reboot": driver.reboot_node,
        "terminate": driver.destroy_node,
    }[action]
    operation(node)


def describe(error: Exception) -> str:
    """An error as one short line for reasons and logs (never a credential: drivers put none)."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}"[:300]
