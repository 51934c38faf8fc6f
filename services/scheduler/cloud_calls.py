"""The scheduler's blocking cloud operations (libcloud is synchronous): run them on a thread,
through :meth:`shared.clouds.connections.CloudConnections.call`."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from libcloud.compute.base import Node, NodeDriver, NodeImage, NodeLocation, NodeSize
from libcloud.compute.types import NodeState

from services.scheduler.placement import Catalog, Offer, Size
from shared.clouds.registry import BOREAS_TAG, boreas_state, nodes_tagged, region_of
from shared.pricing import price_of


@dataclass(frozen=True)
class CatalogRead:
    """An account's catalog, and the libcloud objects a create needs, as the cloud listed them."""

    catalog: Catalog
    sizes: Mapping[str, NodeSize]
    locations: Mapping[str, NodeLocation]  # empty for a driver bound to one region


def read_catalog(driver: NodeDriver, config: Mapping[str, Any] | None = None) -> CatalogRead:
    """The account's catalog, each size priced by :func:`shared.pricing.price_of` (the account
    ``config``'s ``prices`` first, then the driver's own)."""
    listed_sizes = driver.list_sizes()
    sizes = tuple(_size(s, config or {}) for s in listed_sizes)
    images = {str(i.name): str(i.id) for i in driver.list_images() if i.name}
    # A driver bound to one region (EC2, OpenStack) offers that region; others list locations.
    region = region_of(driver)
    locations = {} if region else {str(loc.id): loc for loc in driver.list_locations()}
    regions = (region,) if region else tuple(locations)
    return CatalogRead(
        Catalog(sizes, images, regions), {str(s.id): s for s in listed_sizes}, locations
    )


def _size(size: NodeSize, config: Mapping[str, Any]) -> Size:
    """A listed size as placement compares them; a driver that says nothing of cpus offers 1."""
    cpus = getattr(size, "vcpus", None) or _first(size.extra, "cpus", "vcpu", "vcpus", "cpu") or 1
    return Size(
        id=str(size.id),
        cpus=int(float(cpus)),
        memory_mb=int(size.ram or 0),
        price_per_hour=price_of(str(size.id), size.price, config),
    )


def _first(extra: dict[str, Any], *keys: str) -> Any:
    return next((extra[k] for k in keys if extra.get(k) not in (None, "")), None)


def launch_node(
    driver: NodeDriver,
    read: CatalogRead,
    offer: Offer,
    instance_id: uuid.UUID,
    name: str,
    extra_metadata: dict[str, str] | None = None,
) -> Node:
    """Create the node, tagged with its Boreas id (how a retry after a crash finds it)."""
    location = read.locations.get(offer.region) if offer.region else None
    # Only drivers with locations take the argument (OpenStack's create_node refuses it).
    where: dict[str, Any] = {"location": location} if location is not None else {}
    # libcloud's base class declares neither ex_metadata (every driver Boreas uses takes it) nor
    # an image without a name (drivers need only its id), hence the two ignores.
    return driver.create_node(  # type: ignore[call-arg]
        name=name,
        size=read.sizes[offer.size.id],
        image=NodeImage(id=offer.image_id, name=None, driver=driver),  # type: ignore[arg-type]
        ex_metadata={**(extra_metadata or {}), BOREAS_TAG: str(instance_id)},
        **where,
    )


def find_launched(driver: NodeDriver, instance_id: uuid.UUID) -> Node | None:
    """The live node an earlier attempt created for this instance, if any."""
    return next(
        (
            n
            for n in nodes_tagged(driver, BOREAS_TAG, str(instance_id))
            if boreas_state(n) != "terminated"
        ),
        None,
    )


def act_on_node(driver: NodeDriver, provider_instance_id: str, action: str) -> None:
    # A node known by its id alone: the drivers' actions need no more (libcloud types a name).
    node = Node(provider_instance_id, None, NodeState.UNKNOWN, [], [], driver)  # type: ignore[arg-type]
    operation = {
        "stop": driver.stop_node,
        "start": driver.start_node,
        "reboot": driver.reboot_node,
        "terminate": driver.destroy_node,
    }[action]
    operation(node)


def describe(error: BaseException) -> str:
    """An error as one short line for reasons and logs (never a credential: drivers put none)."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}"[:300]
