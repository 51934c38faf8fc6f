"""Quotas on the real stack: no race admits more than the limit, ends release, drift is
repaired, and chargeback counts running time only."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

from services.quota import bootstrap as quota
from services.quota.reconcile import reconcile_once
from shared.config import QuotaSettings
from shared.events import (
    CatalogSize,
    InstanceState,
    InstanceStateChanged,
    ProviderAccountCatalogRead,
)
from shared.testing import EventProbe, wait_until
from tests.integration.api import Api, gateway_settings, running_gateway
from tests.integration.publishing import connected_bus
from tests.integration.stack import (
    poller_runtime,
    quota_runtime,
    scheduler_runtime,
    simulator_account,
)
from tests.integration.support import settings_for


def decided(probe: EventProbe, ids: set[str]) -> tuple[list, list]:
    """The launches of ``ids`` admitted and rejected, one envelope each: delivery is
    at-least-once, so an event may be seen twice (the relay publishes again what it could not
    mark published)."""
    admitted = _one_per_instance(
        probe.matching("instance.launch_admitted", lambda e: e.subject in ids)
    )
    rejected = _one_per_instance(probe.matching("instance.rejected", lambda e: e.subject in ids))
    return admitted, rejected


def _one_per_instance(envelopes: list) -> list:
    return list({e.subject: e for e in envelopes}.values())


async def racing_launches(
    api: Api, headers: dict, prefix: str, count: int, account: dict
) -> set[str]:
    """``count`` launches on ``account`` at once, each accepted; their instance ids."""
    responses = await asyncio.gather(
        *(
            api.launch(
                headers,
                name=f"{prefix}{i}",
                cpus=1,
                memory_mb=512,
                placement={"account": account["id"]},
            )
            for i in range(count)
        )
    )
    assert {r.status_code for r in responses} == {202}
    return {r.json()["id"] for r in responses}


async def all_decided(probe: EventProbe, ids: set[str], timeout: float) -> tuple[list, list]:
    """Once quota admitted or rejected every one of ``ids``: (admitted, rejected)."""
    await wait_until(
        lambda: sum(map(len, decided(probe, ids))) == len(ids),
        timeout=timeout,
        what=f"each of {len(ids)} launches decided",
    )
    return decided(probe, ids)


async def limits_applied(probe: EventProbe, owner: str, instances: int) -> None:
    await probe.wait_for(
        "quota.usage_changed",
        lambda e: e.data["owner"] == owner and e.data["limits"]["instances"] == instances,
        timeout=10,
    )


async def test_two_hundred_racing_launches_admit_exactly_the_limit(
    api: Api, amqp_url: str, database_url: str, simulator_url: str, probe: EventProbe
) -> None:
    alice_name, alice = await api.new_user("alice")
    admin = await api.admin()
    async with (
        quota_runtime(amqp_url, database_url),
        quota_runtime(amqp_url, database_url),  # two replicas compete on the same queues
        scheduler_runtime(amqp_url, database_url) as scheduler,
        poller_runtime(amqp_url, database_url) as poller,
    ):
        account = await simulator_account(
            api, simulator_url, [alice_name], followers=(scheduler, poller)
        )
        put = await api.client.put(
            f"/v1/quotas/{alice_name}",
            json={"instances": 5, "cpus": None, "memory_mb": None},
            headers=admin,
        )
        assert put.status_code == 200 and put.json()["limits"]["instances"] == 5
        await limits_applied(probe, alice_name, 5)

        ids = await racing_launches(api, alice, "r", 200, account)
        admitted, rejected = await all_decided(probe, ids, timeout=60)
        # A launch the cloud failed gives its room back, and one more fits: on a loaded machine
        # the simulated cloud may fail a create, so the bound counts those.
        failed = probe.matching("instance.failed", lambda e: e.subject in ids)
        assert 5 <= len(admitted) <= 5 + len({e.subject for e in failed})
        assert len(admitted) + len(rejected) == 200
        assert all(e.data["reason"].startswith("instances limit 5 reached") for e in rejected)

        async def shown_rejected() -> bool:
            page = await api.client.get("/v1/instances", params={"limit": 100}, headers=alice)
            return sum(i["state"] == "rejected" for i in page.json()["items"]) >= 95

        await wait_until(shown_rejected, timeout=20, what="the API shows the rejections")

        async def usage_is(instances: int) -> bool:
            got = await api.client.get(f"/v1/quotas/{alice_name}", headers=alice)
            return got.json()["usage"]["instances"] == instances

        await wait_until(lambda: usage_is(5), timeout=20, what="usage 5 through the API")

        # End one admitted instance: its room comes back, and exactly one more launch fits.
        victim = admitted[0].subject
        await probe.wait_for("instance.placed", lambda e: e.subject == victim, timeout=20)
        assert (
            await api.client.delete(f"/v1/instances/{victim}", headers=alice)
        ).status_code == 202
        # (The API, not the probe: the probe also holds the 4 seen on the way up to 5.)
        await wait_until(lambda: usage_is(4), timeout=30, what="the ended room released")
        more_ids = await racing_launches(api, alice, "m", 10, account)
        admitted_more, rejected_more = await all_decided(probe, more_ids, timeout=30)
        assert (len(admitted_more), len(rejected_more)) == (1, 9), [
            e.data["reason"] for e in rejected_more
        ]


MID_NOVEMBER = datetime(2026, 11, 15, tzinfo=UTC)  # 384 h to the month's end


async def test_two_hundred_racing_launches_admit_exactly_what_a_budget_fits(
    api: Api, amqp_url: str, database_url: str, probe: EventProbe
) -> None:
    """Through the gateway: priced from the account's catalog read, 0.25/h for 384 h (the
    quota replicas' clock stands still in mid-November) is 96 a launch; 480 fits exactly 5."""
    gina_name, gina = await api.new_user("gina")
    admin = await api.admin()
    account = await api.new_account([gina_name])
    read = ProviderAccountCatalogRead(
        account_id=account["id"],
        revision=1,
        sizes=[CatalogSize(id="s", cpus=1, memory_mb=512, price_per_hour=0.25)],
        read_at=datetime.now(UTC),
    )
    async with connected_bus(amqp_url, "boreas/scheduler") as bus:
        await bus.publish(read)

    async def catalog_kept() -> bool:
        return bool(
            await api.app.state.runtime.pool.fetchval(
                "SELECT 1 FROM account_catalogs WHERE account_id = $1", account["id"]
            )
        )

    await wait_until(catalog_kept, timeout=10, what="the gateway keeps the catalog read")
    settings = settings_for(amqp_url, database_url, QuotaSettings)
    async with (
        quota.build(settings, clock=lambda: MID_NOVEMBER),
        quota.build(settings, clock=lambda: MID_NOVEMBER),  # two replicas compete
    ):
        put = await api.client.put(
            f"/v1/quotas/{gina_name}",
            json={"instances": None, "cpus": None, "memory_mb": None, "cost_per_month": 480},
            headers=admin,
        )
        assert put.status_code == 200, put.text
        await probe.wait_for(
            "quota.usage_changed",
            lambda e: e.data["owner"] == gina_name and e.data["limits"]["cost_per_month"] == 480,
            timeout=10,
        )
        ids = await racing_launches(api, gina, "b", 200, account)
        admitted, rejected = await all_decided(probe, ids, timeout=60)
        assert (len(admitted), len(rejected)) == (5, 195)
        assert {e.data["reason"] for e in rejected} == {
            "cost_per_month budget 480.00 would be passed: 480.00 spent or committed this "
            "month, this launch would add 96.00 (0.25/h until 2026-12-01 00:00 UTC)"
        }

        async def shown() -> bool:
            got = (await api.client.get(f"/v1/quotas/{gina_name}", headers=gina)).json()
            return got["usage"]["instances"] == 5 and got["usage"]["cost_this_month"] == 480.0

        await wait_until(shown, timeout=20, what="usage and cost through the API")


async def test_lowering_a_limit_blocks_launches_and_kills_nothing(
    api: Api, amqp_url: str, database_url: str, probe: EventProbe
) -> None:
    bob_name, bob = await api.new_user("bob")
    await api.new_account([bob_name])
    admin = await api.admin()
    async with quota_runtime(amqp_url, database_url):
        first = [(await api.launch(bob, name=f"b{i}")).json()["id"] for i in range(3)]
        await wait_until(
            lambda: len(decided(probe, set(first))[0]) == 3, timeout=20, what="admitted"
        )
        await api.client.put(
            f"/v1/quotas/{bob_name}",
            json={"instances": 1, "cpus": None, "memory_mb": None},
            headers=admin,
        )
        await limits_applied(probe, bob_name, 1)
        late = (await api.launch(bob, name="late")).json()["id"]
        [refused] = await probe.wait_for("instance.rejected", lambda e: e.subject == late)
        assert refused.data["reason"].startswith("instances limit 1 reached: 3 in use")
        for instance_id in first:
            got = await api.client.get(f"/v1/instances/{instance_id}", headers=bob)
            assert got.json()["state"] not in ("terminated", "terminating", "rejected")


async def test_quotas_are_visible_to_admins_and_their_owner_only(api: Api) -> None:
    carol_name, carol = await api.new_user("carol")
    _, dave = await api.new_user("dave")
    admin = await api.admin()
    assert (await api.client.get(f"/v1/quotas/{carol_name}", headers=carol)).json() == {
        "limits": {"instances": None, "cpus": None, "memory_mb": None, "cost_per_month": None},
        "usage": {"instances": 0, "cpus": 0, "memory_mb": 0, "cost_this_month": 0.0},
    }
    assert (await api.client.get(f"/v1/quotas/{carol_name}", headers=dave)).status_code == 404
    assert (await api.client.get(f"/v1/quotas/{carol_name}", headers=admin)).status_code == 200
    assert (
        await api.client.put(
            f"/v1/quotas/{carol_name}",
            json={"instances": 1, "cpus": 1, "memory_mb": 1},
            headers=carol,
        )
    ).status_code == 403
    assert (
        await api.client.put(
            "/v1/quotas/nobody-here",
            json={"instances": 1, "cpus": 1, "memory_mb": 1},
            headers=admin,
        )
    ).status_code == 404
    assert (
        await api.client.put(
            f"/v1/quotas/{carol_name}",
            json={"instances": -1, "cpus": 1, "memory_mb": 1},
            headers=admin,
        )
    ).status_code == 422


async def test_drift_is_repaired_from_the_ledger_and_reported(
    api: Api, amqp_url: str, database_url: str, probe: EventProbe
) -> None:
    erin_name, erin = await api.new_user("erin")
    await api.new_account([erin_name])
    async with quota_runtime(amqp_url, database_url) as quota:
        launched = (await api.launch(erin, cpus=2, memory_mb=1024)).json()["id"]
        await probe.wait_for("instance.launch_admitted", lambda e: e.subject == launched)
        await quota.pool.execute(
            "UPDATE usage SET instances = 40, cpus = 7 WHERE owner = $1", erin_name
        )
        assert await reconcile_once(quota.pool) >= 1
        row = await quota.pool.fetchrow("SELECT * FROM usage WHERE owner = $1", erin_name)
        assert (row["instances"], row["cpus"], row["memory_mb"]) == (1, 2, 1024)
        await probe.wait_for(
            "quota.usage_changed",
            lambda e: (
                e.data["owner"] == erin_name
                and e.data["usage"]["instances"] == 1
                and e.data["usage"]["cpus"] == 2
            ),
        )


def at(hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 3, 2, hour, minute, tzinfo=UTC)


async def test_usage_report_matches_a_hand_computed_scenario(api: Api, amqp_url: str) -> None:
    frank_name, frank = await api.new_user("frank")
    await api.new_account([frank_name])
    instance_id = (await api.launch(frank, cpus=2, memory_mb=2048)).json()["id"]
    account = f"acct-{uuid.uuid4().hex[:6]}"
    # run 10:00-11:00, stopped 11:00-11:30, run 11:30-12:00, terminated at 12:00
    timeline = [
        (None, InstanceState.PENDING, at(9, 58)),
        (InstanceState.PENDING, InstanceState.RUNNING, at(10)),
        (InstanceState.RUNNING, InstanceState.STOPPED, at(11)),
        (InstanceState.STOPPED, InstanceState.RUNNING, at(11, 30)),
        (InstanceState.RUNNING, InstanceState.TERMINATED, at(12)),
    ]
    async with connected_bus(amqp_url, "boreas/poller") as bus:
        for old, new, observed in timeline:
            await bus.publish(
                InstanceStateChanged(
                    instance_id=instance_id,
                    owner=frank_name,
                    account_id=account,
                    provider="simulator",
                    provider_instance_id="sim-x",
                    old_state=old,
                    new_state=new,
                    cpus=2,
                    memory_mb=2048,
                    observed_at=observed,
                )
            )

    async def report(start: datetime, end: datetime) -> dict:
        response = await api.client.get(
            "/v1/usage",
            params={"from": start.isoformat(), "to": end.isoformat()},
            headers=frank,
        )
        assert response.status_code == 200, response.text
        return response.json()

    async def settled() -> dict | None:
        body = await report(at(9), at(13))
        owners = body["owners"]
        return body if owners and owners[0]["instance_hours"] == 1.5 else None

    whole = await wait_until(settled, timeout=10, what="all five events followed")
    [mine] = whole["owners"]
    assert mine["owner"] == frank_name
    assert (mine["instance_hours"], mine["cpu_hours"], mine["memory_mb_hours"]) == (
        1.5,
        3.0,
        3072.0,
    )
    assert [a["account_id"] for a in mine["accounts"]] == [account]
    assert whole["from"].startswith("2026-03-02T09:00")

    # 10:30-11:45 holds 30 minutes of the first run and 15 of the second.
    [part] = (await report(at(10, 30), at(11, 45)))["owners"]
    assert (part["instance_hours"], part["cpu_hours"], part["memory_mb_hours"]) == (
        0.75,
        1.5,
        1536.0,
    )
    # Nobody else's usage, and nobody can ask for it.
    _, other = await api.new_user("other")
    assert (
        await api.client.get("/v1/usage", params={"owner": frank_name}, headers=other)
    ).status_code == 404
    admin_view = await api.client.get(
        "/v1/usage",
        params={"from": at(9).isoformat(), "to": at(13).isoformat(), "owner": frank_name},
        headers=await api.admin(),
    )
    assert admin_view.json()["owners"][0]["cpu_hours"] == 3.0


async def test_a_new_user_starts_with_the_default_limits(
    amqp_url: str, database_url: str, probe: EventProbe
) -> None:
    settings = gateway_settings(
        amqp_url,
        database_url,
        default_quota_instances=2,
        default_quota_cpus=8,
        default_quota_memory_mb=4096,
    )
    async with running_gateway(settings) as api, quota_runtime(amqp_url, database_url):
        name, headers = await api.new_user("nina")
        shown = await api.client.get(f"/v1/quotas/{name}", headers=headers)
        assert shown.json()["limits"] == {
            "instances": 2,
            "cpus": 8,
            "memory_mb": 4096,
            "cost_per_month": None,
        }
        [announced] = await probe.wait_for(
            "quota.limits_set", lambda e: e.data["owner"] == name, timeout=10
        )
        assert announced.data["set_by"] == "boreas"
        await limits_applied(probe, name, 2)
        await api.new_account([name])
        launched = [
            (await api.launch(headers, cpus=1, memory_mb=512)).json()["id"] for _ in range(3)
        ]
        await wait_until(
            lambda: sum(len(d) for d in decided(probe, set(launched))) == 3,
            timeout=20,
            what="three launches decided",
        )
        admitted, rejected = decided(probe, set(launched))
        assert (len(admitted), len(rejected)) == (2, 1)
        assert rejected[0].data["reason"].startswith("instances limit 2 reached")
        audit = await api.client.get("/v1/audit?action=quota_set", headers=await api.admin())
        assert any(e["target"] == name and e["actor"] == "boreas" for e in audit.json()["items"])
