"""Money through the gateway: launches priced from the accounts' catalogs, budgets in quotas, and
the usage report's cost checked against a hand-computed scenario (as test_quota does for hours)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from shared.events import (
    CatalogSize,
    InstancePlaced,
    InstanceState,
    InstanceStateChanged,
    ProviderAccountCatalogRead,
    QuotaUsageChanged,
    ResourceLimits,
    ResourceUsage,
)
from shared.testing import EventProbe, wait_until
from tests.integration.api import Api
from tests.integration.publishing import connected_bus

NO_LIMITS_BUT_BUDGET = '{"instances": null, "cpus": null, "memory_mb": null, "cost_per_month": '


def at(hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 3, 2, hour, minute, tzinfo=UTC)


def catalog(
    account_id: str,
    *sizes: tuple[str, int, int, float | None],
    revision: int = 1,
    read_at: datetime | None = None,
) -> ProviderAccountCatalogRead:
    return ProviderAccountCatalogRead(
        account_id=account_id,
        revision=revision,
        sizes=[CatalogSize(id=i, cpus=c, memory_mb=m, price_per_hour=p) for i, c, m, p in sizes],
        read_at=read_at or datetime.now(UTC),
    )


async def launch_price(
    api: Api, probe: EventProbe, headers: dict, **launch: object
) -> float | None:
    response = await api.launch(headers, **launch)
    assert response.status_code == 202, response.text
    (requested,) = await probe.wait_for(
        "instance.launch_requested", lambda e: e.subject == response.json()["id"], timeout=10
    )
    return requested.data["price_per_hour"]


async def catalog_known(api: Api, account_id: str, revision: int, read_at: datetime) -> None:
    async def kept() -> bool:
        row = await api.app.state.runtime.pool.fetchrow(
            "SELECT revision, read_at FROM account_catalogs WHERE account_id = $1", account_id
        )
        return row is not None and (row["revision"], row["read_at"]) == (revision, read_at)

    await wait_until(kept, timeout=10, what="the gateway keeps the catalog read")


async def test_a_launch_is_priced_at_the_dearest_cheapest_fit_of_its_accounts(
    api: Api, amqp_url: str, probe: EventProbe
) -> None:
    name, headers = await api.new_user("pam")
    first = await api.new_account([name])
    second = await api.new_account([name])
    # Not read yet: the price is unknown.
    assert await launch_price(api, probe, headers, cpus=2, memory_mb=2048) is None

    reads = [
        catalog(first["id"], ("s", 1, 1024, 0.05), ("m", 2, 4096, 0.10), ("l", 8, 16384, 0.80)),
        catalog(second["id"], ("m2", 2, 2048, 0.12), ("big", 4, 8192, None)),
    ]
    async with connected_bus(amqp_url, "boreas/scheduler") as bus:
        for read in reads:
            await bus.publish(read)
    for read in reads:
        await catalog_known(api, read.account_id, read.revision, read.read_at)

    # first: m at 0.10; second: m2 at 0.12 -> admitted at 0.12.
    assert await launch_price(api, probe, headers, cpus=2, memory_mb=2048) == 0.12
    # Pinned to the first account: its own cheapest fit.
    placed_first = {"account": first["name"]}
    assert (
        await launch_price(api, probe, headers, cpus=2, memory_mb=2048, placement=placed_first)
        == 0.10
    )
    # Only the second has 4 cpus besides first's l; second's big has no price: unknown.
    assert await launch_price(api, probe, headers, cpus=4, memory_mb=8192) is None
    # Nothing fits anywhere: 0 (the launch will fail at placement anyway).
    assert await launch_price(api, probe, headers, cpus=64, memory_mb=1024) == 0.0

    # The newest read wins, whatever order reads arrive in.
    newer = catalog(first["id"], ("m", 2, 4096, 0.20), revision=2)
    older = catalog(first["id"], ("m", 2, 4096, 0.01), revision=1)
    async with connected_bus(amqp_url, "boreas/scheduler") as bus:
        await bus.publish(newer)
        await catalog_known(api, first["id"], 2, newer.read_at)
        await bus.publish(older)
        await bus.publish(catalog(first["id"], ("m", 2, 4096, 0.02), revision=2, read_at=at(1)))
        marker = catalog(second["id"], ("m2", 2, 2048, 0.12))
        await bus.publish(marker)  # the same queue: once it is kept, the stale ones were seen
    await catalog_known(api, second["id"], 1, marker.read_at)
    assert (
        await launch_price(api, probe, headers, cpus=2, memory_mb=2048, placement=placed_first)
        == 0.20
    )


async def test_budgets_are_set_and_shown_with_the_cost_so_far(
    api: Api, amqp_url: str, probe: EventProbe
) -> None:
    name, headers = await api.new_user("bud")
    admin = await api.admin()
    limits = {"instances": None, "cpus": None, "memory_mb": None, "cost_per_month": 25.5}
    put = await api.client.put(f"/v1/quotas/{name}", json=limits, headers=admin)
    assert put.status_code == 200, put.text
    assert put.json()["limits"] == limits
    (announced,) = await probe.wait_for(
        "quota.limits_set", lambda e: e.data["owner"] == name, timeout=10
    )
    assert announced.data["limits"]["cost_per_month"] == 25.5
    for bad in ("-1", '"a lot"', "NaN", "Infinity"):  # raw JSON: NaN is not JSON, but parsed
        refused = await api.client.put(
            f"/v1/quotas/{name}",
            content=NO_LIMITS_BUT_BUDGET + bad + "}",
            headers={**admin, "Content-Type": "application/json"},
        )
        assert refused.status_code == 422, bad
    # Without the field: no budget (older clients).
    plain = await api.client.put(
        f"/v1/quotas/{name}", json={"instances": 3, "cpus": None, "memory_mb": None}, headers=admin
    )
    assert plain.json()["limits"]["cost_per_month"] is None

    async with connected_bus(amqp_url, "boreas/quota") as bus:
        await bus.publish(
            QuotaUsageChanged(
                owner=name,
                usage=ResourceUsage(instances=1, cpus=2, memory_mb=2048, cost_this_month=7.25),
                limits=ResourceLimits(instances=3, cost_per_month=25.5),
            )
        )

    async def shown() -> dict | None:
        body = (await api.client.get(f"/v1/quotas/{name}", headers=headers)).json()
        return body if body["usage"]["cost_this_month"] == 7.25 else None

    body = await wait_until(shown, timeout=10, what="usage followed")
    assert body["limits"]["cost_per_month"] == 25.5
    assert body["usage"] == {"instances": 1, "cpus": 2, "memory_mb": 2048, "cost_this_month": 7.25}


async def test_usage_report_with_costs_matches_a_hand_computed_scenario(
    api: Api, amqp_url: str
) -> None:
    gina, headers = await api.new_user("gina")
    await api.new_account([gina])
    priced = (await api.launch(headers, name="priced", cpus=2, memory_mb=2048)).json()["id"]
    cheap = (await api.launch(headers, name="cheap", cpus=1, memory_mb=1024)).json()["id"]
    unpriced = (await api.launch(headers, name="unpriced", cpus=1, memory_mb=512)).json()["id"]
    one, two = f"acct-{uuid.uuid4().hex[:6]}", f"acct-{uuid.uuid4().hex[:6]}"
    # priced (0.25/h on one): runs 10:00-11:00 and 11:30-12:00 = 1.5 h -> 0.375
    # cheap (0.10/h on two): runs 10:00-12:00 = 2 h -> 0.2
    # unpriced (no price, on two): runs 10:00-11:00 = 1 h -> counts hours, costs nothing
    plans = {
        priced: (
            one,
            0.25,
            2,
            2048,
            [(10, 0, "running"), (11, 0, "stopped"), (11, 30, "running"), (12, 0, "terminated")],
        ),
        cheap: (two, 0.10, 1, 1024, [(10, 0, "running"), (12, 0, "terminated")]),
        unpriced: (two, None, 1, 512, [(10, 0, "running"), (11, 0, "terminated")]),
    }
    async with (
        connected_bus(amqp_url, "boreas/scheduler") as scheduler,
        connected_bus(amqp_url, "boreas/poller") as poller,
    ):
        for instance_id, (account, price, cpus, memory_mb, timeline) in plans.items():
            await scheduler.publish(
                InstancePlaced(
                    instance_id=instance_id,
                    owner=gina,
                    account_id=account,
                    provider="simulator",
                    provider_instance_id=f"sim-{instance_id[:8]}",
                    cpus=cpus,
                    memory_mb=memory_mb,
                    price_per_hour=price,
                )
            )
            old = InstanceState.PENDING
            for hour, minute, state in timeline:
                new = InstanceState(state)
                await poller.publish(
                    InstanceStateChanged(
                        instance_id=instance_id,
                        owner=gina,
                        account_id=account,
                        provider="simulator",
                        provider_instance_id=f"sim-{instance_id[:8]}",
                        old_state=old,
                        new_state=new,
                        cpus=cpus,
                        memory_mb=memory_mb,
                        observed_at=at(hour, minute),
                    )
                )
                old = new

    async def report(start: datetime, end: datetime) -> dict:
        response = await api.client.get(
            "/v1/usage", params={"from": start.isoformat(), "to": end.isoformat()}, headers=headers
        )
        assert response.status_code == 200, response.text
        return response.json()

    async def settled() -> dict | None:
        body = await report(at(9), at(13))
        return body if body["owners"] and body["owners"][0]["instance_hours"] == 4.5 else None

    whole = await wait_until(settled, timeout=10, what="every event followed")
    [mine] = whole["owners"]
    assert mine["cost"] == 0.575
    by_account = {a["account_id"]: a for a in mine["accounts"]}
    assert (by_account[one]["instance_hours"], by_account[one]["cost"]) == (1.5, 0.375)
    assert (by_account[two]["instance_hours"], by_account[two]["cost"]) == (3.0, 0.2)

    # 10:30-11:45: priced 0.5 h + 0.25 h at 0.25 = 0.1875; cheap 1.25 h at 0.10 = 0.125;
    # unpriced 0.5 h at nothing.
    [part] = (await report(at(10, 30), at(11, 45)))["owners"]
    assert part["instance_hours"] == 2.5
    part_accounts = {a["account_id"]: a["cost"] for a in part["accounts"]}
    assert part_accounts == {one: 0.1875, two: 0.125}
    assert part["cost"] == 0.3125

    # The admin's view of the same owner is the same.
    admin_view = await api.client.get(
        "/v1/usage",
        params={"from": at(9).isoformat(), "to": at(13).isoformat(), "owner": gina},
        headers=await api.admin(),
    )
    assert admin_view.json()["owners"][0]["cost"] == 0.575
    # The instances show the price they were placed at.
    shown = (await api.client.get(f"/v1/instances/{priced}", headers=headers)).json()
    assert shown["price_per_hour"] == 0.25
