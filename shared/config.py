"""Settings read from the environment (prefix ``BOREAS_``), one class per service.

Nothing here is read at import time: each service's ``__main__`` instantiates its own class.
"""

from __future__ import annotations

import os
import socket
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/boreas"


class ServiceSettings(BaseSettings):
    """What every service needs: where the bus and database are, and how to behave on them."""

    model_config = SettingsConfigDict(env_prefix="BOREAS_", extra="ignore", frozen=True)

    env: Literal["dev", "prod"] = "dev"
    amqp_url: str = DEFAULT_AMQP_URL
    database_url: str = DEFAULT_DATABASE_URL
    log_level: str = "INFO"
    # Tells replicas apart in /v1/status; host and pid, so two on one machine are two.
    replica_id: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")

    heartbeat_interval: float = Field(default=5.0, gt=0)
    prefetch: int = Field(default=16, ge=1, le=1000)
    # How many times a message is delivered to a failing handler before it is dead-lettered.
    max_deliveries: int = Field(default=5, ge=1, le=100)
    outbox_poll_interval: float = Field(default=1.0, gt=0)
    inbox_retention_days: int = Field(default=7, ge=1)
    shutdown_grace: float = Field(default=8.0, gt=0)

    @model_validator(mode="after")
    def _refuse_default_secrets_in_prod(self) -> ServiceSettings:
        if self.env == "prod" and "guest:guest@" in self.amqp_url:
            raise ValueError("BOREAS_ENV=prod refuses the default RabbitMQ guest account")
        return self


class GatewaySettings(ServiceSettings):
    gateway_host: str = "127.0.0.1"
    gateway_port: int = Field(default=8080, ge=1, le=65535)
    # A service is shown alive while its last heartbeat is younger than this many intervals.
    alive_after_missed_heartbeats: float = Field(default=3.0, gt=1)
