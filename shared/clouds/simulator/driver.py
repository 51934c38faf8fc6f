"""A libcloud ``NodeDriver`` for the simulated cloud: JSON over HTTP, like a real provider's.

driver = SimulatorNodeDriver("api-key", "api-secret", endpoint="http://127.0.0.1:8090")
driver.ex_ensure_account({"regions": ["north"], "timings": {"boot": 5}})
node = driver.create_node("web-1", driver.list_sizes()[0], driver.list_images()[0])
"""

from __future__ import annotations

import base64
import contextlib
import gc
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from libcloud.common.base import ConnectionUserAndKey, JsonResponse
from libcloud.common.types import InvalidCredsError, LibcloudError
from libcloud.compute.base import Node, NodeDriver, NodeImage, NodeLocation, NodeSize
from libcloud.compute.types import NodeState

DEFAULT_ENDPOINT = "http://127.0.0.1:8090"

NODE_STATES = {
    "pending": NodeState.PENDING,
    "running": NodeState.RUNNING,
    "stopping": NodeState.STOPPING,
    "stopped": NodeState.STOPPED,
    "starting": NodeState.STARTING,
    "rebooting": NodeState.REBOOTING,
    "terminating": NodeState.UNKNOWN,  # libcloud has no "terminating"; extra["state"] has it
    "terminated": NodeState.TERMINATED,
    "error": NodeState.ERROR,
}


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Building 100,000 nodes allocates a few hundred thousand containers, and each batch of
    them sets off another garbage collection over everything alive: most of the time a large
    listing takes. They form no cycles, so the collector waits until they are built. Threads that
    list at once may turn it back on early; that only costs time."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class SimulatorError(LibcloudError):
    """An error answered by the simulated cloud, with its code (e.g. ``InsufficientCapacity``)."""

    def __init__(self, code: str, message: str, status: int, driver: Any = None) -> None:
        super().__init__(f"{code}: {message}", driver=driver)
        self.code, self.status = code, status


class SimulatorResponse(JsonResponse):
    def success(self) -> bool:
        return 200 <= self.status < 300

    def parse_error(self) -> None:
        body: dict[str, Any]
        try:
            body = json.loads(self.body) if self.body else {}
        except ValueError:
            body = {}
        code, message = body.get("code", "Error"), body.get("message", self.body or "")
        if self.status == 401:
            raise InvalidCredsError(message)
        raise SimulatorError(
            code, message, self.status, driver=getattr(self.connection, "driver", None)
        )


class SimulatorConnection(ConnectionUserAndKey):
    responseCls = SimulatorResponse

    def add_default_headers(self, headers: dict[str, str]) -> dict[str, str]:
        token = base64.b64encode(f"{self.user_id}:{self.key}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
        headers["Content-Type"] = "application/json"
        return headers


class SimulatorNodeDriver(NodeDriver):
    type = "simulator"
    name = "Boreas simulated cloud"
    website = "https://example.invalid/boreas"
    connectionCls = SimulatorConnection
    features: dict[str, list[str]] = {"create_node": []}  # noqa: RUF012 (libcloud's own shape)

    def __init__(self, key: str, secret: str, endpoint: str = DEFAULT_ENDPOINT, **kwargs: Any):
        url = urlsplit(endpoint)
        super().__init__(
            key,
            secret,
            secure=url.scheme == "https",
            host=url.hostname,
            port=url.port or (443 if url.scheme == "https" else 80),
            **kwargs,
        )

    def _request(
        self,
        path: str,
        method: str = "GET",
        data: Any = None,
        params: dict[str, str] | None = None,
    ) -> Any:
        body = json.dumps(data) if data is not None else None
        return self.connection.request(path, params=params, method=method, data=body).object

    def ex_ensure_account(self, settings: dict[str, Any] | None = None) -> None:
        """Create the account on first use, or update how it behaves."""
        self._request("/v1/account", "PUT", settings or {})

    def list_sizes(self, location: NodeLocation | None = None) -> list[NodeSize]:
        return [
            NodeSize(
                id=s["id"],
                name=s["id"],
                ram=s["ram_mb"],
                disk=s["disk_gb"],
                bandwidth=None,
                price=s["price_per_hour"],
                driver=self,
                extra={"cpus": s["cpus"]},
            )
            for s in self._request("/v1/sizes")
        ]

    def list_images(self, location: NodeLocation | None = None) -> list[NodeImage]:
        return [
            NodeImage(id=i["id"], name=i["name"], driver=self) for i in self._request("/v1/images")
        ]

    def list_locations(self) -> list[NodeLocation]:
        return [
            NodeLocation(id=r, name=r, country="SIM", driver=self)
            for r in self._request("/v1/regions")
        ]

    def list_nodes(self) -> list[Node]:
        return self._list_nodes()

    def ex_list_nodes_tagged(self, key: str, value: str) -> list[Node]:
        """The nodes tagged ``key=value`` (terminated ones too, while they are still listed),
        without listing the others; an index lookup for the key ``boreas-instance``."""
        return self._list_nodes({"tag": f"{key}={value}"})

    def _list_nodes(self, params: dict[str, str] | None = None) -> list[Node]:
        with _collector_paused():
            return [self._to_node(n) for n in self._request("/v1/nodes", params=params)]

    # libcloud's drivers take ex_ keywords the base class does not declare (EC2's and OpenStack's
    # ex_metadata among them), so the signature differs from the base's by design.
    def create_node(  # type: ignore[override]
        self,
        name: str,
        size: NodeSize,
        image: NodeImage,
        location: NodeLocation | None = None,
        ex_metadata: dict[str, str] | None = None,
        **_kwargs: Any,
    ) -> Node:
        """``ex_metadata`` become the node's tags, as with libcloud's EC2 and OpenStack drivers."""
        body = {
            "name": name,
            "size": size.id,
            "image": image.id,
            "region": location.id if location else None,
            "tags": ex_metadata or {},
        }
        return self._to_node(self._request("/v1/nodes", "POST", body))

    def reboot_node(self, node: Node) -> bool:
        return self._act(node, "reboot")

    def start_node(self, node: Node) -> bool:
        return self._act(node, "start")

    def stop_node(self, node: Node) -> bool:
        return self._act(node, "stop")

    def destroy_node(self, node: Node) -> bool:
        self._request(f"/v1/nodes/{node.id}", "DELETE")
        return True

    def ex_kill_node(self, node: Node) -> bool:
        """Failure injection: the node dies at once, as if the provider lost it."""
        return self._act(node, "kill")

    def _act(self, node: Node, action: str) -> bool:
        self._request(f"/v1/nodes/{node.id}/{action}", "POST")
        return True

    def _to_node(self, raw: dict[str, Any]) -> Node:
        return Node(
            id=raw["id"],
            name=raw["name"],
            state=NODE_STATES.get(raw["state"], NodeState.UNKNOWN),
            public_ips=raw["public_ips"],
            private_ips=[],
            driver=self,
            extra={
                "state": raw["state"],
                "since": raw["since"],
                "tags": raw["tags"],
                "region": raw["region"],
                "size": raw["size"],
                "image": raw["image"],
                "created_at": raw["created_at"],
            },
        )
