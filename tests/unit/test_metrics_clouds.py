"""Every cloud call is counted by provider and outcome: ok, error, throttled."""

from __future__ import annotations

import pytest
from libcloud.common.exceptions import RateLimitReachedError
from prometheus_client import REGISTRY

from shared.accounts import Account
from shared.clouds.connections import CloudConnections, CloudThrottled
from shared.credentials import CredentialCipher, new_key_text
from shared.events import SealedSecret

ACCOUNT = Account("a1", "a1", "ec2", {}, SealedSecret(key_id="k", nonce="", ciphertext=""), 1)


def calls(outcome: str) -> float:
    labels = {"provider": "ec2", "outcome": outcome}
    return REGISTRY.get_sample_value("boreas_cloud_calls_total", labels) or 0.0


def fails(error: Exception):
    def operation(_driver: object) -> None:
        raise error

    return operation


async def test_cloud_calls_are_counted_by_provider_and_outcome(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clouds = CloudConnections(CredentialCipher.from_texts(new_key_text(), []))
    monkeypatch.setattr(clouds, "_build", lambda _account: object())
    before = {o: calls(o) for o in ("ok", "error", "throttled")}

    assert await clouds.call(ACCOUNT, lambda _driver: "listed") == "listed"
    with pytest.raises(ValueError):
        await clouds.call(ACCOUNT, fails(ValueError("no such image")))
    with pytest.raises(CloudThrottled):
        await clouds.call(ACCOUNT, fails(RateLimitReachedError()))

    assert {o: calls(o) - before[o] for o in before} == {"ok": 1, "error": 1, "throttled": 1}
