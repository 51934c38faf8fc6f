"""A cloud that throttles: launches go to the other accounts or wait; none fails for throttling.

The simulated cloud's token bucket (``api_rate``, ``api_burst``) answers ``RequestLimitExceeded``
like EC2 once an account's calls run past it.
"""

from __future__ import annotations

from shared.runtime import ServiceRuntime
from shared.testing import EventProbe
from tests.integration.api import Api
from tests.integration.clouds import tenant
from tests.integration.stack import simulator_account

# The throttled account is the cheaper one, so every launch tries it first.
CHEAP = [{"id": "sim.cheap", "cpus": 4, "ram_mb": 8192, "price_per_hour": 0.001}]
# Enough for the catalog (three calls) and a create or two, then one call every 5 s: launches
# come faster than that, and go elsewhere.
THROTTLED = {"api_rate": 0.2, "api_burst": 5, "sizes": CHEAP}


async def test_launches_go_to_another_account_while_one_throttles(
    api: Api, scheduler: ServiceRuntime, simulator_url: str, probe: EventProbe
) -> None:
    owner, headers, throttled = await tenant(api, simulator_url, (scheduler,), "tina", **THROTTLED)
    other = await simulator_account(api, simulator_url, [owner], followers=(scheduler,))
    ids = [(await api.launch(headers)).json()["id"] for _ in range(8)]

    placed = await probe.wait_for(
        "instance.placed", lambda e: e.subject in ids, count=len(ids), timeout=60
    )
    assert not probe.matching("instance.failed", lambda e: e.subject in ids)
    fell_back = [e for e in placed if e.data["account_id"] == other["id"]]
    assert fell_back, "the throttled account's share went elsewhere"
    # Each of those tried the cheaper, throttled account first.
    assert all("earlier ones failed" in e.data["reason"] for e in fell_back), [
        e.data["reason"] for e in fell_back
    ]
    assert {e.data["account_id"] for e in placed} <= {throttled["id"], other["id"]}


async def test_launches_wait_for_a_throttled_account_they_are_bound_to(
    api: Api, scheduler: ServiceRuntime, simulator_url: str, probe: EventProbe
) -> None:
    _, headers, throttled = await tenant(api, simulator_url, (scheduler,), "tom", **THROTTLED)
    ids = [
        (await api.launch(headers, placement={"account": throttled["id"]})).json()["id"]
        for _ in range(4)
    ]
    # Past the burst, one call every 5 s: they wait their turn, and all get there.
    placed = await probe.wait_for(
        "instance.placed", lambda e: e.subject in ids, count=len(ids), timeout=60
    )
    assert {e.data["account_id"] for e in placed} == {throttled["id"]}
    assert not probe.matching("instance.failed", lambda e: e.subject in ids)
