"""The lifecycle against OpenStack, through libcloud's OpenStack driver and a local mimic server.

mimic keeps a server in BUILD while its ``server_building`` metadata says so, and its clock moves
only when told (``/mimic/v1.1/tick``), so pending → running is a real transition. mimic answers
stop and start with 400 (not supported), so this lifecycle is launch, run, reboot, terminate.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shared.clouds.registry import build_driver
from shared.runtime import ServiceRuntime
from shared.testing import EventProbe
from tests.integration.api import Api
from tests.integration.clouds import api_shows, placed_for_a_new_tenant
from tests.integration.stack import POLL_INTERVAL
from tests.integration.test_lifecycle import changed_to
from tests.processes import answers, free_port, running_process

ROOT = Path(__file__).resolve().parents[2]
TWISTD = ROOT / ".venv-mimic" / "bin" / "twistd"


@pytest.fixture(scope="module")
def mimic_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not TWISTD.exists():
        pytest.fail("mimic is not installed: `make test` creates .venv-mimic", pytrace=False)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [str(TWISTD), "-n", "--pidfile=", "mimic", "-l", f"tcp:{port}:interface=127.0.0.1"]
    with running_process(
        command, cwd=tmp_path_factory.mktemp("mimic"), ready=lambda: answers(f"{url}/identity")
    ):
        yield url


async def test_lifecycle_on_openstack(
    api: Api,
    clouds_side: tuple[ServiceRuntime, ServiceRuntime],
    mimic_url: str,
    probe: EventProbe,
) -> None:
    credentials = {"username": "boreas", "password": "mimic-does-not-check"}
    config = {
        "auth_url": f"{mimic_url}/identity",
        "auth_version": "2.0_password",
        "tenant": f"t-{uuid.uuid4().hex[:6]}",
        "service_name": "cloudServersOpenStack",
        "service_region": "ORD",
        "regions": ["ORD"],
        "metadata": {"server_building": "30"},  # stays BUILD for 30 mimic seconds
        "poll_interval": POLL_INTERVAL,
    }
    driver = await asyncio.to_thread(build_driver, "openstack", credentials, config)
    images = await asyncio.to_thread(driver.list_images)
    ubuntu = next(i.id for i in images if "ubuntu" in i.name.lower())
    _, alice, instance_id, placed = await placed_for_a_new_tenant(
        api,
        probe,
        clouds_side,
        {
            "name": f"os-{uuid.uuid4().hex[:6]}",
            "provider": "openstack",
            "credentials": credentials,
            "config": {**config, "images": {"ubuntu": ubuntu}},
        },
        image="ubuntu",
        cpus=1,
        memory_mb=512,
        placement={"provider": "openstack"},
    )
    assert placed.data["provider"] == "openstack"

    await api_shows(api, alice, instance_id, "pending", timeout=10)  # while BUILD
    assert probe.matching("instance.state_changed", changed_to(instance_id, "running")) == []

    async with httpx.AsyncClient() as client:
        ticked = await client.post(f"{mimic_url}/mimic/v1.1/tick", json={"amount": 31})
    assert ticked.status_code == 200
    [running] = await probe.wait_for(
        "instance.state_changed", changed_to(instance_id, "running"), timeout=20
    )
    assert running.data["old_state"] == "pending"

    await api_shows(api, alice, instance_id, "running", timeout=10)  # following the event

    rebooted = await api.client.post(f"/v1/instances/{instance_id}/reboot", headers=alice)
    assert rebooted.status_code == 202
    gone = await api.client.delete(f"/v1/instances/{instance_id}", headers=alice)
    assert gone.status_code == 202
    [ended] = await probe.wait_for(
        "instance.state_changed", changed_to(instance_id, "terminated"), timeout=20
    )
    assert ended.data["provider"] == "openstack"
