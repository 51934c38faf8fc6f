"""Provider accounts and launches onto them, for tests that run the scheduler and poller against a
cloud (the simulated one, moto's EC2, mimic's OpenStack)."""

from __future__ import annotations

from shared.events import Envelope
from shared.runtime import ServiceRuntime
from shared.testing import EventProbe, wait_until
from tests.integration.api import Api
from tests.integration.stack import registered_account, simulator_account


async def tenant(
    api: Api,
    simulator_url: str,
    followers: tuple[ServiceRuntime, ...],
    prefix: str = "alice",
    **account: object,
) -> tuple[str, dict, dict]:
    """A new user with a simulated-cloud account granted to them alone (``account`` as
    simulator_account takes it), known to ``followers``: (name, headers, account)."""
    name, headers = await api.new_user(prefix)
    created = await simulator_account(api, simulator_url, [name], followers=followers, **account)
    return name, headers, created


async def launched_and_placed(
    api: Api, probe: EventProbe, headers: dict, **launch: object
) -> tuple[str, Envelope]:
    """Launch (``launch`` as Api.launch takes it) and wait for the scheduler's placement: the
    instance's id and its instance.placed event."""
    launched = await api.launch(headers, **launch)
    assert launched.status_code == 202, launched.text
    instance_id = launched.json()["id"]
    [placed] = await probe.wait_for(
        "instance.placed", lambda e: e.subject == instance_id, timeout=20
    )
    return instance_id, placed


async def api_shows(
    api: Api, headers: dict, instance_id: str, state: str, timeout: float = 20
) -> None:
    """Wait until GET /v1/instances/{id} shows the instance in ``state``."""

    async def shown() -> bool:
        got = await api.client.get(f"/v1/instances/{instance_id}", headers=headers)
        return got.json()["state"] == state

    await wait_until(shown, timeout=timeout, what=f"API shows {state}")


async def placed_for_a_new_tenant(
    api: Api,
    probe: EventProbe,
    followers: tuple[ServiceRuntime, ...],
    account: dict,
    **launch: object,
) -> tuple[str, dict, str, Envelope]:
    """A new user, ``account`` (a POST /v1/provider-accounts body but for its grants) registered
    as theirs alone, and a launch of theirs (``launch`` as Api.launch takes it) placed:
    (user name, headers, instance id, its instance.placed event)."""
    name, headers = await api.new_user("alice")
    await registered_account(api, {**account, "grants": [name]}, followers)
    instance_id, placed = await launched_and_placed(api, probe, headers, **launch)
    return name, headers, instance_id, placed
