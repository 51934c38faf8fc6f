"""Finds (or starts) RabbitMQ and PostgreSQL for a test session; restarts them in outage tests."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import asyncpg
import pytest

from shared.config import DEFAULT_AMQP_URL, DEFAULT_DATABASE_URL
from shared.reachability import unreachable

HOW_TO_START = (
    "start them and run the tests again (see DEVELOPERS.md):\n"
    "  rabbitmq-server -detached\n"
    "  pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start\n"
    "or set BOREAS_AMQP_URL / BOREAS_DATABASE_URL, or run a Docker engine for testcontainers."
)


@dataclass
class Infrastructure:
    """Connection URLs scoped to this session's vhost and database, plus broker/database control."""

    amqp_url: str
    database_url: str
    rabbitmqctl: list[str]
    postgres_ctl: list[str] | None
    _cleanups: list = field(default_factory=list)

    def rabbit(self, *args: str) -> str:
        done = subprocess.run(
            [*self.rabbitmqctl, *args], capture_output=True, text=True, timeout=120
        )
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {done.stderr or done.stdout}")
        return done.stdout

    def renew_vhost(self) -> None:
        """Delete the session's vhost and make it again, empty. Every quorum queue holds files
        open in the broker; a whole session's worth of them (each test names its own) would
        exhaust a broker's default limit of file descriptors."""
        parts = urlsplit(self.amqp_url)
        name, user = unquote(parts.path.lstrip("/")), parts.username or "guest"
        self.rabbit("delete_vhost", name)
        self.rabbit("add_vhost", name)
        self.rabbit("set_permissions", "-p", name, user, ".*", ".*", ".*")

    @contextlib.contextmanager
    def isolated(self) -> Iterator[tuple[str, str]]:
        """A further vhost and database of its own, for a whole stack started by a test."""
        name = f"boreas_test_{uuid.uuid4().hex[:8]}"
        user = urlsplit(self.amqp_url).username or "guest"
        self.rabbit("add_vhost", name)
        self.rabbit("set_permissions", "-p", name, user, ".*", ".*", ".*")
        try:
            yield _with_vhost(self.amqp_url, name), _with_db(self.database_url, name)
        finally:
            with contextlib.suppress(Exception):
                self.rabbit("delete_vhost", name)
            _drop_database_blocking(self.database_url, name)

    def postgres(self, action: str) -> None:
        if self.postgres_ctl is None:
            raise RuntimeError("no way to control PostgreSQL here (pg_ctlcluster not found)")
        subprocess.run([*self.postgres_ctl, action], check=True, capture_output=True, timeout=120)


# A broker or database that accepts connections but answers slowly (RabbitMQ recovering its
# queues after a restart, say) gets one patient try this long; one that refuses them fails at once.
PATIENCE_S = 120.0


def _answers(amqp_url: str, database_url: str) -> list[str]:
    missing = asyncio.run(unreachable(amqp_url, database_url))
    if any("(TimeoutError)" in name for name in missing):
        print(f"waiting up to {PATIENCE_S:g} s for {' and '.join(missing)}", file=sys.stderr)
        missing = asyncio.run(unreachable(amqp_url, database_url, timeout=PATIENCE_S))
    return missing


def _with_db(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def _with_vhost(url: str, vhost: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + quote(vhost, safe="")))


def _docker_engine() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


def _postgres_ctl() -> list[str] | None:
    if shutil.which("pg_ctlcluster") is None or not os.path.isdir("/etc/postgresql"):
        return None
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    return ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main"]


@contextlib.contextmanager
def provide_infrastructure() -> Iterator[Infrastructure]:
    amqp_url = os.environ.get("BOREAS_AMQP_URL", DEFAULT_AMQP_URL)
    database_url = os.environ.get("BOREAS_DATABASE_URL", DEFAULT_DATABASE_URL)
    with contextlib.ExitStack() as stack:
        missing = _answers(amqp_url, database_url)
        rabbitmqctl: list[str] | None = ["rabbitmqctl"] if shutil.which("rabbitmqctl") else None
        postgres_ctl = _postgres_ctl()
        if missing and _docker_engine():
            from testcontainers.postgres import PostgresContainer
            from testcontainers.rabbitmq import RabbitMqContainer

            rabbit = stack.enter_context(RabbitMqContainer("rabbitmq:3.13"))
            postgres = stack.enter_context(
                PostgresContainer("postgres:16", username="postgres", password="postgres")
            )
            host, port = rabbit.get_container_host_ip(), rabbit.get_exposed_port(5672)
            amqp_url = f"amqp://guest:guest@{host}:{port}/"
            database_url = postgres.get_connection_url(driver=None)
            rabbitmqctl = ["docker", "exec", rabbit.get_wrapped_container().id, "rabbitmqctl"]
            postgres_ctl = None
            missing = _answers(amqp_url, database_url)
        if missing:
            pytest.fail(f"{' and '.join(missing)} not reachable: {HOW_TO_START}", pytrace=False)
        if rabbitmqctl is None:
            pytest.fail("rabbitmqctl is needed to create the test vhost: " + HOW_TO_START)

        name = f"boreas_test_{uuid.uuid4().hex[:8]}"
        infra = Infrastructure(
            amqp_url=_with_vhost(amqp_url, name),
            database_url=_with_db(database_url, name),
            rabbitmqctl=rabbitmqctl,
            postgres_ctl=postgres_ctl,
        )
        user = urlsplit(amqp_url).username or "guest"
        infra.rabbit("add_vhost", name)
        infra.rabbit("set_permissions", "-p", name, user, ".*", ".*", ".*")
        try:
            yield infra
        finally:
            with contextlib.suppress(Exception):
                infra.rabbit("delete_vhost", name)
            _drop_database_blocking(database_url, name)


def _drop_database_blocking(server_url: str, name: str) -> None:
    # In a thread of its own: callers may already be inside the test session's event loop.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _drop_database(server_url, name)).result(timeout=60)


async def _drop_database(server_url: str, name: str) -> None:
    conn = await asyncpg.connect(_with_db(server_url, "postgres"))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
