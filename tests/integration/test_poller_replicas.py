"""Two poller replicas share the accounts: each account polled once per interval, and when one
replica stops the other polls every account on; a list call slower than the interval is never
doubled. (How soon a replica takes over is a matter of speed, not asserted here.)"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta

from shared.runtime import ServiceRuntime
from shared.testing import EventProbe, wait_until
from tests.integration.api import Api
from tests.integration.stack import (
    POLL_INTERVAL,
    simulator_account,
)


async def polls_of(poller: ServiceRuntime, account_ids: list[str]) -> dict[str, list]:
    rows = await poller.pool.fetch(
        "SELECT account_id, replica, at FROM polls WHERE account_id = ANY($1) AND ok ORDER BY at",
        account_ids,
    )
    by_account: dict[str, list] = defaultdict(list)
    for row in rows:
        by_account[row["account_id"]].append((row["at"], row["replica"]))
    return by_account


async def test_replicas_split_accounts_and_take_over_from_a_dead_one(
    api: Api,
    scheduler: ServiceRuntime,
    steady_poller: Callable[..., ServiceRuntime],
    simulator_url: str,
    probe: EventProbe,
) -> None:
    alice_name, alice = await api.new_user("alice")
    # Every account at one interval, busy or idle: this is about sharing, not adapting.
    first, second = steady_poller(replica="replica-a"), steady_poller(replica="replica-b")
    await first.start()
    try:
        async with second:
            accounts = [
                (
                    await simulator_account(
                        api, simulator_url, [alice_name], followers=(scheduler, first)
                    )
                )["id"]
                for _ in range(4)
            ]
            instance_id = (await api.launch(alice, placement={"account": accounts[0]})).json()["id"]

            async def each_polled(times: int, since: datetime | None = None) -> bool:
                polls = await polls_of(second, accounts)
                return all(
                    len([p for p in polls[a] if since is None or p[0] > since]) >= times
                    for a in accounts
                )

            await wait_until(lambda: each_polled(6), timeout=30, what="six polls each")
            polls = await polls_of(second, accounts)
            # The launch's account is polled at once when its instance is placed (a designed
            # poke, which may come a moment after a poll): only the other three are paced.
            for account_id in accounts[1:]:
                # A due account is claimed by one replica, which moves its next poll an
                # interval ahead: two replicas polling it would be milliseconds apart. The
                # stamps are the poller's own, and a slow machine only widens the gaps.
                times = [at for at, _ in polls[account_id]]
                gaps = [b - a for a, b in itertools.pairwise(times)]
                assert min(gaps) >= timedelta(seconds=POLL_INTERVAL * 0.95), (
                    f"{account_id} polled twice within one interval: {gaps}"
                )
            replicas = {replica for p in polls.values() for _, replica in p}
            assert replicas == {"replica-a", "replica-b"}, "both replicas take part"

            await first.stop()  # replica A goes away: its tasks ended, its pool closed
            polls = await polls_of(second, accounts)
            by_a = sorted(at for p in polls.values() for at, r in p if r == "replica-a")
            stopped_at = max(at for p in polls.values() for at, _ in p)
            await wait_until(
                lambda: each_polled(4, since=stopped_at),
                timeout=30,
                what="every account polled on by the surviving replica",
            )
            polls = await polls_of(second, accounts)
            assert sorted(at for p in polls.values() for at, r in p if r == "replica-a") == by_a, (
                "a stopped replica polls nothing more"
            )
            for account_id in accounts:
                after = [r for at, r in polls[account_id] if at > stopped_at]
                assert set(after) == {"replica-b"}, account_id
    finally:
        await first.stop()

    running = probe.matching(
        "instance.state_changed",
        lambda e: e.subject == instance_id and e.data["new_state"] == "running",
    )
    assert len(running) == 1, "one transition, one event, whichever replica saw it"


async def test_a_list_call_slower_than_the_interval_is_never_doubled(
    api: Api,
    scheduler: ServiceRuntime,
    steady_poller: Callable[..., ServiceRuntime],
    simulator_url: str,
) -> None:
    alice_name, _ = await api.new_user("alice")
    latency = 3 * POLL_INTERVAL  # each list call outlasts three intervals
    first, second = steady_poller(replica="replica-a"), steady_poller(replica="replica-b")
    async with first, second:
        account_id = (
            await simulator_account(
                api,
                simulator_url,
                [alice_name],
                followers=(scheduler, first),
                api_latency=latency,
            )
        )["id"]

        async def polled(times: int) -> bool:
            return len((await polls_of(second, [account_id]))[account_id]) >= times

        await wait_until(lambda: polled(4), timeout=30, what="four polls of the slow account")
        polls = (await polls_of(second, [account_id]))[account_id]
    # A poll's stamp is taken when its list call answers, and the next poll is claimed only
    # after that: one poll at a time means stamps at least a list call apart.
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(polls)]
    assert min(gaps) >= timedelta(seconds=latency * 0.95), f"polls overlapped: {gaps}"
