"""The webhook fan-out (queue_for_webhooks) with a fake unit of work and repository: which
webhooks get a delivery of an event, with no database and no bus."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

import pytest

from services.notifier.handlers import queue_for_webhooks
from shared.events import (
    Event,
    InstanceRejected,
    QuotaUsageChanged,
    ResourceLimits,
    ResourceUsage,
    SealedSecret,
    WebhookChanged,
)
from tests.fakes import FakeConnection, FakeFanOutRepository, FakeUnitOfWork

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
INSTANCE = uuid.UUID("00000000-0000-4000-8000-000000000001")


def clock() -> datetime:
    return NOW


def rejected(owner: str = "alice") -> InstanceRejected:
    return InstanceRejected(instance_id=INSTANCE, owner=owner, reason="cpus limit 4 reached")


def usage_changed(owner: str = "alice") -> QuotaUsageChanged:
    return QuotaUsageChanged(owner=owner, usage=ResourceUsage(instances=1), limits=ResourceLimits())


@pytest.fixture
def repo() -> FakeFanOutRepository:
    return FakeFanOutRepository(FakeConnection())


async def webhook(
    repo: FakeFanOutRepository,
    owner: str = "alice",
    *,
    scope: Literal["own", "all"] = "own",
    topics: list[str] | None = None,
    **changes: Any,
) -> uuid.UUID:
    """A webhook the notifier has been told of, as remember_webhook keeps it."""
    webhook_id = uuid.uuid4()
    sealed = SealedSecret(key_id="k", nonce="bm9uY2U=", ciphertext="c2VjcmV0")
    fields: dict[str, Any] = {
        "webhook_id": webhook_id,
        "owner": owner,
        "scope": scope,
        "url": "https://hooks.example/in",
        "sealed_url": sealed,
        "topics": topics or ["#"],
        "secrets": [],
        "active": True,
        "revision": 1,
    }
    await repo.remember_webhook(repo.conn, WebhookChanged(**(fields | changes)))
    return webhook_id


async def fan_out(event: Event, repo: FakeFanOutRepository) -> FakeUnitOfWork:
    uow = FakeUnitOfWork.for_event(event, conn=repo.conn)
    await queue_for_webhooks(event, uow, clock=clock, repo=repo)
    return uow


def receivers(repo: FakeFanOutRepository) -> set[uuid.UUID]:
    return {d["webhook_id"] for d in repo.deliveries}


async def test_the_owners_webhook_and_admins_all_scoped_ones_get_one_delivery_each(
    repo: FakeFanOutRepository,
) -> None:
    own = await webhook(repo, "alice")
    admins = await webhook(repo, "root", scope="all")
    await webhook(repo, "bob")  # another user's: not about bob's resources

    uow = await fan_out(rejected("alice"), repo)

    assert receivers(repo) == {own, admins}
    assert len(repo.deliveries) == 2
    for delivery in repo.deliveries:
        assert delivery["message_id"] == uow.envelope.id
        assert delivery["topic"] == "instance.rejected"
        assert delivery["ordering_key"] == str(INSTANCE)  # an instance's events, in order
        assert delivery["body"] == uow.envelope.to_bytes().decode()
        assert delivery["created_at"] == NOW
    assert uow.published == [] and uow.committed == []


async def test_an_event_about_no_instance_is_ordered_by_owner(
    repo: FakeFanOutRepository,
) -> None:
    await webhook(repo, "alice")

    await fan_out(usage_changed("alice"), repo)

    [delivery] = repo.deliveries
    assert (delivery["topic"], delivery["ordering_key"]) == ("quota.usage_changed", "owner:alice")


async def test_only_webhooks_whose_topics_match_get_the_event(repo: FakeFanOutRepository) -> None:
    instances = await webhook(repo, topics=["instance.*"])
    rejections = await webhook(repo, topics=["quota.#", "instance.rejected"])
    await webhook(repo, topics=["quota.*"])
    await webhook(repo, "root", scope="all", topics=["instance.placed"])

    await fan_out(rejected(), repo)

    assert receivers(repo) == {instances, rejections}


async def test_an_event_no_webhook_wants_queues_nothing(repo: FakeFanOutRepository) -> None:
    await webhook(repo, topics=["quota.*"])
    await webhook(repo, "bob")

    await fan_out(rejected("alice"), repo)

    assert repo.deliveries == []


async def test_deleted_and_disabled_webhooks_get_nothing(repo: FakeFanOutRepository) -> None:
    live = await webhook(repo)
    await webhook(repo, active=False)
    await webhook(repo, deleted=True)
    await webhook(repo, "root", scope="all", active=False)

    await fan_out(rejected(), repo)

    assert receivers(repo) == {live}


async def test_a_webhook_disabled_by_a_later_revision_gets_nothing(
    repo: FakeFanOutRepository,
) -> None:
    webhook_id = await webhook(repo)
    await webhook(repo, webhook_id=webhook_id, active=False, revision=2)

    await fan_out(rejected(), repo)

    assert repo.deliveries == []


async def test_an_event_delivered_again_is_queued_once_per_webhook(
    repo: FakeFanOutRepository,
) -> None:
    await webhook(repo)
    event = rejected()
    uow = FakeUnitOfWork.for_event(event, conn=repo.conn)

    await queue_for_webhooks(event, uow, clock=clock, repo=repo)
    await queue_for_webhooks(event, uow, clock=clock, repo=repo)

    assert len(repo.deliveries) == 1
