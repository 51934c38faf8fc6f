"""The same lifecycle against EC2, through libcloud's EC2 driver and a local moto server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from moto.server import ThreadedMotoServer

from shared.clouds.ec2 import CompatibleEC2NodeDriver
from shared.runtime import ServiceRuntime
from shared.testing import EventProbe
from tests.integration.api import Api
from tests.integration.clouds import placed_for_a_new_tenant
from tests.integration.stack import POLL_INTERVAL
from tests.integration.test_lifecycle import drive_through_lifecycle
from tests.processes import free_port


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def some_ami(url: str) -> str:
    driver = CompatibleEC2NodeDriver("AKIDBOREAS", "secret", endpoint=url)
    return next(i.id for i in driver.list_images() if "ubuntu" in (i.name or "").lower())


async def test_lifecycle_on_ec2(
    api: Api,
    clouds_side: tuple[ServiceRuntime, ServiceRuntime],
    moto_url: str,
    probe: EventProbe,
) -> None:
    alice_name, alice, instance_id, placed = await placed_for_a_new_tenant(
        api,
        probe,
        clouds_side,
        {
            "name": f"ec2-{uuid.uuid4().hex[:6]}",
            "provider": "ec2",
            "credentials": {"key": "AKIDBOREAS", "secret": "moto-does-not-check"},
            "config": {
                "endpoint": moto_url,
                "region": "us-east-1",
                "regions": ["us-east-1"],
                "images": {"ubuntu-24.04": some_ami(moto_url)},
                "poll_interval": POLL_INTERVAL,
            },
        },
        image="ubuntu-24.04",
        placement={"provider": "ec2", "region": "us-east-1"},
    )
    assert placed.data["provider"] == "ec2"
    assert placed.data["provider_instance_id"].startswith("i-")
    assert placed.data["region"] == "us-east-1"

    await drive_through_lifecycle(api, probe, alice_name, alice, instance_id)
