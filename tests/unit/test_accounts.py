"""The provider account row the scheduler and the poller read back from their own tables."""

from __future__ import annotations

import json
from dataclasses import dataclass

from shared.accounts import Account
from shared.events import SealedSecret

SEALED = SealedSecret(key_id="k", nonce="bm9uY2U=", ciphertext="c2VjcmV0")
ROW = {
    "id": "a1",
    "name": "main",
    "provider": "simulator",
    "config": json.dumps({"regions": ["north"]}),
    "credentials": SEALED.model_dump_json(),
    "revision": 3,
    "deleted": False,
}


def test_a_row_reads_back_as_the_account_with_its_credentials_still_sealed() -> None:
    assert Account.from_row(ROW) == Account(
        "a1", "main", "simulator", {"regions": ["north"]}, SEALED, 3
    )


def test_a_service_reads_its_own_columns_into_a_subclass() -> None:
    @dataclass(frozen=True)
    class Weighted(Account):
        weight: int

    assert Account.from_row(ROW).id == Weighted.from_row(ROW, weight=2).id
    assert Weighted.from_row(ROW, weight=2).weight == 2
