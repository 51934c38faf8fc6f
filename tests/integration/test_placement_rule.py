"""The gateway's fast placement check in SQL agrees with the one pure rule (shared.eligibility)
that the scheduler places by and that explains a refusal."""

from __future__ import annotations

import itertools
import uuid

from services.gateway.repository import accounts
from services.gateway.schemas import PlacementIn
from shared import eligibility
from tests.integration.api import Api

REGIONS = (["north", "south"], ["north"], [], None)
PROVIDERS = (None, "simulator", "ec2")
REGION_ASKED = (None, "north", "south", "east")


async def test_the_sql_check_and_the_pure_rule_agree_on_every_placement(api: Api) -> None:
    name, _ = await api.new_user("eve")
    registered = []
    for regions in REGIONS:
        config = {} if regions is None else {"regions": regions}
        registered.append(
            await api.register_account(
                {
                    "name": f"rule-{uuid.uuid4().hex[:8]}",
                    "provider": "simulator",
                    "credentials": {"api_key": f"key-{uuid.uuid4().hex}", "api_secret": "s3cret"},
                    "config": config,
                    "grants": [name],
                }
            )
        )
    named = (None, registered[1]["id"], registered[2]["name"], "no-such-account")
    pool = api.app.state.runtime.pool
    async with pool.acquire() as conn:
        granted = await accounts.visible_accounts(conn, username=name, everything=False)
        # Accounts other tests granted to everyone ('*') are the user's too, for both checks.
        assert {a["id"] for a in registered} <= {a.id for a in granted}
        outcomes = []
        for provider, account, region in itertools.product(PROVIDERS, named, REGION_ASKED):
            placement = PlacementIn(provider=provider, account=account, region=region)
            by_sql = await accounts.placement_possible(
                conn, username=name, provider=provider, account=account, region=region
            )
            by_rule = bool(eligibility.eligible(granted, placement))
            assert by_sql == by_rule, (provider, account, region)
            outcomes.append(by_rule)
    assert len(outcomes) == len(PROVIDERS) * len(named) * len(REGION_ASKED)
    assert True in outcomes and False in outcomes
