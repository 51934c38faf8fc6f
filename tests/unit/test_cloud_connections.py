"""Cloud calls: a read that loses a kept-alive connection is tried once more; a create is not
(it may have happened); a throttle is its own error and pauses the account."""

from __future__ import annotations

import pytest
import requests
from libcloud.common.exceptions import RateLimitReachedError

from shared.accounts import Account
from shared.clouds.connections import CloudConnections, CloudThrottled
from shared.credentials import CredentialCipher, new_key_text
from shared.events import SealedSecret

SEALED = SealedSecret(key_id="k", nonce="bm9uY2U=", ciphertext="c2VjcmV0")
ACCOUNT = Account("a1", "a1", "simulator", {}, SEALED, 1)


class Driver:
    """Stands in for a libcloud driver: the operations under test take it and ignore it."""


@pytest.fixture
def clouds(monkeypatch: pytest.MonkeyPatch) -> CloudConnections:
    connections = CloudConnections(CredentialCipher.from_texts(new_key_text(), []))
    monkeypatch.setattr(connections, "_build", lambda _account: Driver())
    return connections


def failing_once(error: Exception):
    calls: list[Driver] = []

    def operation(driver: Driver) -> str:
        calls.append(driver)
        if len(calls) == 1:
            raise error
        return "listed"

    return operation, calls


async def test_a_read_that_lost_its_connection_is_tried_again_on_a_fresh_driver(
    clouds: CloudConnections,
) -> None:
    operation, calls = failing_once(requests.exceptions.ConnectionError("Remote end closed"))
    assert await clouds.call(ACCOUNT, operation, read_only=True) == "listed"
    assert len(calls) == 2 and calls[0] is not calls[1]


async def test_a_create_that_lost_its_connection_is_not_tried_again(
    clouds: CloudConnections,
) -> None:
    operation, calls = failing_once(requests.exceptions.ConnectionError("Remote end closed"))
    with pytest.raises(requests.exceptions.ConnectionError):
        await clouds.call(ACCOUNT, operation)
    assert len(calls) == 1


async def test_a_throttle_pauses_the_account_and_says_so(clouds: CloudConnections) -> None:
    operation, _ = failing_once(RateLimitReachedError())
    with pytest.raises(CloudThrottled):
        await clouds.call(ACCOUNT, operation, read_only=True)
    assert clouds.budget(ACCOUNT).throttles == 1
    assert clouds.budget(ACCOUNT).pause > 0
