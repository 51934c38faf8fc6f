"""Settings read from the environment (prefix ``BOREAS_``), one class per service.

Nothing here is read at import time: each service's ``__main__`` instantiates its own class.
"""

from __future__ import annotations

import os
import socket
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.clouds.connections import CloudConnections
from shared.credentials import CredentialCipher, dev_key
from shared.ordering import SLOTS
from shared.webhooks.targets import IPNetwork, parse_networks

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/boreas"


class ServiceSettings(BaseSettings):
    """What every service needs: where the bus and database are, and how to behave on them."""

    model_config = SettingsConfigDict(env_prefix="BOREAS_", extra="ignore", frozen=True)

    # prod unless told: a service started bare refuses default secrets and lets no webhook reach
    # private networks. `make run` and the tests say dev.
    env: Literal["dev", "prod"] = "prod"
    amqp_url: str = DEFAULT_AMQP_URL
    database_url: str = DEFAULT_DATABASE_URL
    log_level: str = "INFO"
    # Tells replicas apart in /v1/status; host and pid, so two on one machine are two.
    replica_id: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")

    heartbeat_interval: float = Field(default=5.0, gt=0)
    # Messages a replica may hold unacknowledged per queue (per partition of ordered handlers).
    prefetch: int = Field(default=64, ge=1, le=1000)
    # Partition queues of each ordered handler: how many replicas can share its work.
    partitions: int = Field(default=4, ge=1, le=SLOTS)
    # Batches a replica handles at once per handler, and messages per batch (one transaction).
    consumer_concurrency: int = Field(default=16, ge=1, le=256)
    consumer_batch: int = Field(default=32, ge=1, le=500)
    # How many times a message is delivered to a failing handler before it is dead-lettered.
    max_deliveries: int = Field(default=5, ge=1, le=100)
    # Connections in this process's PostgreSQL pool, and how many of them the consumers may
    # hold at once (the rest stay free for the outbox relay, background loops and routes).
    db_pool_size: int = Field(default=10, ge=2, le=200)
    consumer_connections: int = Field(default=6, ge=1, le=200)
    outbox_poll_interval: float = Field(default=1.0, gt=0)
    inbox_retention_days: int = Field(default=7, ge=1)
    shutdown_grace: float = Field(default=8.0, gt=0)
    # Where a worker service answers /metrics, /healthz and /readyz (the gateway answers them on
    # its own port and ignores these). Port 0: any free port.
    probe_host: str = "127.0.0.1"
    probe_port: int = Field(default=9100, ge=0, le=65535)

    # Seals provider credentials (see shared/credentials.py). Unset in dev: a key generated once
    # into .boreas/secret.key. Previous keys (comma-separated) still open during a rotation.
    secret_key: SecretStr | None = None
    # Where accounts of provider "simulator" are, unless their config names an "endpoint".
    simulator_url: str = "http://127.0.0.1:8090"
    previous_secret_keys: SecretStr = SecretStr("")

    # Private networks webhook URLs may still target (comma-separated CIDRs). Unset: 127.0.0.0/8
    # in dev, nothing in prod; every other loopback, link-local or private address is refused.
    webhook_allowed_nets: str | None = None

    @field_validator("webhook_allowed_nets")
    @classmethod
    def _networks_parse(cls, value: str | None) -> str | None:
        if value is not None:
            parse_networks(value)  # a malformed CIDR fails at start, not at the first webhook
        return value

    def webhook_networks(self) -> tuple[IPNetwork, ...]:
        if self.webhook_allowed_nets is None:
            return parse_networks("127.0.0.0/8" if self.env == "dev" else "")
        return parse_networks(self.webhook_allowed_nets)

    @model_validator(mode="after")
    def _refuse_default_secrets_in_prod(self) -> ServiceSettings:
        if self.env == "prod" and "guest:guest@" in self.amqp_url:
            raise ValueError("BOREAS_ENV=prod refuses the default RabbitMQ guest account")
        if self.env == "prod" and self.secret_key is None:
            raise ValueError("BOREAS_ENV=prod requires BOREAS_SECRET_KEY")
        if self.consumer_connections >= self.db_pool_size:
            raise ValueError(
                "BOREAS_CONSUMER_CONNECTIONS must be below BOREAS_DB_POOL_SIZE: the outbox relay "
                "and background loops need connections of their own"
            )
        return self

    def credential_cipher(self) -> CredentialCipher:
        current = self.secret_key.get_secret_value() if self.secret_key else dev_key()
        previous = self.previous_secret_keys.get_secret_value().split(",")
        return CredentialCipher.from_texts(current, [p for p in previous if p.strip()])


class CloudSettings(ServiceSettings):
    """What a service that calls clouds (scheduler, poller) needs."""

    # Threads that make cloud calls (libcloud is synchronous), per process.
    cloud_threads: int = Field(default=64, ge=1, le=1024)
    # Per account and replica, unless the account's config sets api_concurrency / api_rate.
    cloud_calls_in_flight: int = Field(default=16, ge=1, le=1000)
    cloud_calls_per_second: float = Field(default=50.0, gt=0)

    def cloud_connections(self) -> CloudConnections:
        return CloudConnections(
            self.credential_cipher(),
            simulator_url=self.simulator_url,
            threads=self.cloud_threads,
            calls_in_flight=self.cloud_calls_in_flight,
            calls_per_second=self.cloud_calls_per_second,
        )


class SchedulerSettings(CloudSettings):
    # Cloud calls (launches and actions) a replica makes at the same time.
    scheduler_concurrency: int = Field(default=64, ge=1, le=1000)
    # Seconds a replica holds a cloud call before another may take it (renewed while it works).
    cloud_call_lease: float = Field(default=15.0, gt=0)
    # Seconds an account's catalog (sizes, images, prices) is kept before it is listed again.
    catalog_refresh: float = Field(default=600.0, gt=0)
    # Seconds between looks for leases to warn about or to end.
    lease_check_interval: float = Field(default=1.0, gt=0)


class PollerSettings(CloudSettings):
    # Seconds between two polls of an account while something on it changes (an instance in
    # transition, an action just asked for), unless its config sets "poll_interval".
    poll_interval: float = Field(default=10.0, gt=0)
    # Seconds between two polls of an account where everything is settled (the drift check),
    # unless its config sets "poll_idle_interval". Unset: ten times the poll interval.
    poll_idle_interval: float | None = Field(default=None, gt=0)
    # Seconds after an action during which its account is polled fast, unless its effect shows.
    poll_after_action: float = Field(default=600.0, gt=0)
    # Ceiling of the exponential backoff after provider errors.
    poll_backoff_max: float = Field(default=300.0, gt=0)
    # Accounts one replica polls at the same time.
    poll_concurrency: int = Field(default=16, ge=1, le=256)

    def intervals(self, config: dict) -> tuple[float, float]:
        """An account's (fast, idle) poll intervals, in seconds."""
        fast = float(config.get("poll_interval") or self.poll_interval)
        idle = config.get("poll_idle_interval") or self.poll_idle_interval or 10 * fast
        return fast, max(fast, float(idle))


class QuotaSettings(ServiceSettings):
    # Seconds between two drift checks of usage against the ledger.
    quota_reconcile_interval: float = Field(default=60.0, gt=0)


class NotifierSettings(ServiceSettings):
    # Where to send every public event as RFC 5424 syslog; unset: no syslog sink.
    syslog_url: str | None = None

    # Seconds one webhook request may take before it counts as failed.
    webhook_timeout: float = Field(default=10.0, gt=0, le=60)
    # Retry delays double from the first to the ceiling, each with random jitter; a delivery
    # that still fails after the horizon (seconds since the event) is given up.
    webhook_retry_first: float = Field(default=5.0, gt=0)
    webhook_retry_max: float = Field(default=3600.0, gt=0)
    webhook_retry_horizon: float = Field(default=3 * 24 * 3600.0, gt=0)
    # Requests in flight at once per replica, and to one webhook.
    webhook_concurrency: int = Field(default=32, ge=1, le=1000)
    webhook_concurrency_per_endpoint: int = Field(default=4, ge=1, le=100)
    # Requests in flight at once per replica to one owner's webhooks: below the replica's
    # concurrency, so one owner's slow receivers always leave room for others. Unset: a quarter.
    webhook_concurrency_per_owner: int | None = Field(default=None, ge=1, le=999)

    def webhook_owner_limit(self) -> int:
        if self.webhook_concurrency_per_owner is not None:
            return self.webhook_concurrency_per_owner
        return max(1, self.webhook_concurrency // 4)

    @model_validator(mode="after")
    def _one_owner_never_fills_the_pool(self) -> NotifierSettings:
        pool, per_owner = self.webhook_concurrency, self.webhook_owner_limit()
        if pool < 2:
            raise ValueError(
                "BOREAS_WEBHOOK_CONCURRENCY must be at least 2: one owner's webhooks may use "
                "only part of it (BOREAS_WEBHOOK_CONCURRENCY_PER_OWNER, which must be below it), "
                "so that other owners' deliveries always find room"
            )
        if per_owner >= pool:
            raise ValueError(
                f"BOREAS_WEBHOOK_CONCURRENCY_PER_OWNER ({per_owner}) must be below "
                f"BOREAS_WEBHOOK_CONCURRENCY ({pool}): one owner's slow webhooks must never "
                "hold every request a notifier replica may have in flight"
            )
        return self


class GatewaySettings(ServiceSettings):
    # Requests need connections too: a larger pool than the other services'.
    db_pool_size: int = Field(default=20, ge=2, le=200)
    gateway_host: str = "127.0.0.1"
    gateway_port: int = Field(default=8080, ge=1, le=65535)
    # Worker processes serving HTTP (each a replica of the gateway service).
    gateway_workers: int = Field(default=1, ge=1, le=64)
    # A service is shown alive while its last heartbeat is younger than this many intervals.
    alive_after_missed_heartbeats: float = Field(default=3.0, gt=1)

    # Creates user `admin` at first start when no admin exists; dev prints a generated one.
    admin_password: SecretStr | None = None
    token_ttl_seconds: int = Field(default=12 * 3600, ge=60, le=30 * 24 * 3600)
    # Limits a new user starts with (an admin changes them with PUT /v1/quotas/{username}).
    default_quota_instances: int | None = Field(default=10, ge=0)
    default_quota_cpus: int | None = Field(default=20, ge=0)
    default_quota_memory_mb: int | None = Field(default=40960, ge=0)

    @field_validator(
        "default_quota_instances", "default_quota_cpus", "default_quota_memory_mb", mode="before"
    )
    @classmethod
    def _unlimited_is_none(cls, value: object) -> object:
        # BOREAS_DEFAULT_QUOTA_CPUS=unlimited (or empty): no default limit on that resource.
        if isinstance(value, str) and value.strip().lower() in ("", "unlimited", "none"):
            return None
        return value

    # Larger request bodies are refused with 413 before they are read.
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # Token requests allowed per client address per minute (any username, right or wrong).
    token_requests_per_minute: int = Field(default=30, ge=1)
    # Failed logins per minute: past this many for one username from one address, that pair is
    # refused (429); past it for one username from all addresses together, each further attempt
    # on it is slowed down, never refused, so nobody can lock a user out.
    login_failures_per_minute: int = Field(default=5, ge=1)
    # Event streams (GET /v1/events) one user may have open at once, across all gateway
    # processes and replicas; the next one gets 429.
    event_streams_per_user: int = Field(default=5, ge=1, le=10_000)
    # Seconds a launch held by an approval rule waits for an answer before it is denied.
    approval_timeout: float = Field(default=24 * 3600.0, gt=0)

    @model_validator(mode="after")
    def _prod_needs_an_admin_password(self) -> GatewaySettings:
        if self.env == "prod" and self.admin_password is not None:
            if len(self.admin_password.get_secret_value()) < 12:
                raise ValueError("BOREAS_ADMIN_PASSWORD must have at least 12 characters in prod")
        return self
