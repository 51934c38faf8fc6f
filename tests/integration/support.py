"""Building blocks for integration tests: a throwaway service on the real bus and database."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TypeVar

from shared.config import ServiceSettings
from shared.consumer import Subscription
from shared.db import SHARED_MIGRATIONS, Migration, load_migrations
from shared.events import InstanceRejected, InstanceState, InstanceStateChanged
from shared.runtime import ServiceRuntime

# A table a test handler writes to, so effects can be counted in SQL.
EFFECTS_TABLE = Migration(
    "test/0001",
    "0001_effects",
    "CREATE TABLE effects (event_id text NOT NULL, note text NOT NULL)",
)


Settings = TypeVar("Settings", bound=ServiceSettings)


def paced(kind: type[Settings], amqp_url: str, database_url: str, **values: object) -> Settings:
    """Settings of ``kind`` on the session's broker and database, at the tests' pace."""
    return kind.model_validate(
        {
            "amqp_url": amqp_url,
            "database_url": database_url,
            "heartbeat_interval": 0.5,
            "outbox_poll_interval": 0.2,
            # Two partitions per ordered handler: enough to show them; every quorum queue costs
            # the test broker memory and recovery time.
            "partitions": 2,
            # Several services share the process: each probe listener on a free port.
            "probe_port": 0,
            **values,
        }
    )


def settings_for(
    amqp_url: str,
    database_url: str,
    kind: type[Settings] = ServiceSettings,  # type: ignore[assignment]
    **overrides: object,
) -> Settings:
    """A worker service's settings for tests: few tries before a dead letter, a short grace."""
    return paced(
        kind, amqp_url, database_url, **{"max_deliveries": 3, "shutdown_grace": 5.0, **overrides}
    )


def throwaway_runtime(
    name: str,
    settings: ServiceSettings,
    subscriptions: Sequence[Subscription] = (),
) -> ServiceRuntime:
    return ServiceRuntime(
        name,
        settings,
        [*load_migrations("shared", SHARED_MIGRATIONS), EFFECTS_TABLE],
        subscriptions=subscriptions,
    )


def rejection(note: str = "test") -> InstanceRejected:
    return InstanceRejected(instance_id=uuid.uuid4(), owner="alice", reason=note)


def first_sighting() -> InstanceStateChanged:
    """A new instance of alice's seen pending: an event that any handler of states gets."""
    return InstanceStateChanged(
        instance_id=uuid.uuid4(),
        owner="alice",
        account_id="a",
        provider="simulator",
        provider_instance_id=None,
        old_state=None,
        new_state=InstanceState.PENDING,
        cpus=1,
        memory_mb=512,
        observed_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
