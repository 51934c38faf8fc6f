"""Finds (or starts) RabbitMQ and PostgreSQL for a test session; restarts them in outage tests."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any
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


class Vhosts:
    """RabbitMQ vhosts made ahead and deleted behind, on a thread of their own: each rabbitmqctl
    call starts an Erlang VM (a second or two), and a test session switches vhosts some seventy
    times. One spare is kept ready; calls run one at a time, in the order asked."""

    def __init__(self, rabbit: Callable[..., str], user: str) -> None:
        self._rabbit = rabbit
        self._user = user
        self._worker = concurrent.futures.ThreadPoolExecutor(1, "vhosts")
        self._spare = self._worker.submit(self._make)

    def _make(self) -> str:
        name = f"boreas_test_{uuid.uuid4().hex[:8]}"
        self._patiently("add_vhost", name)
        self._patiently("set_permissions", "-p", name, self._user, ".*", ".*", ".*")
        return name

    def _delete(self, name: str) -> None:
        with contextlib.suppress(RuntimeError):  # a vhost left over is only a few open files
            self._patiently("delete_vhost", name)

    def _patiently(self, *args: str) -> None:
        """Run a call, and once more after the broker has started again if it failed: an
        outage test may be restarting the broker while this thread works ahead."""
        try:
            self._rabbit(*args)
        except (RuntimeError, subprocess.TimeoutExpired) as error:
            if "does not exist" in str(error):
                raise
            self._rabbit("await_startup", "--timeout", str(int(PATIENCE_S)))
            self._rabbit(*args)

    def take(self) -> str:
        """A new, empty vhost (the spare; the next one is made meanwhile)."""
        name = self._spare.result(timeout=300)
        self._spare = self._worker.submit(self._make)
        return name

    def drop(self, name: str) -> None:
        """Delete ``name`` once the calls asked before are done; returns at once."""
        self._worker.submit(self._delete, name)

    def close(self) -> None:
        """Delete the spare and wait for every deletion asked."""
        spare = self._spare
        self._worker.submit(lambda: self._delete(spare.result()))
        self._worker.shutdown(wait=True)


@dataclass
class Infrastructure:
    """Connection URLs scoped to this session's vhost and database, plus broker/database control.
    ``amqp_url`` names the vhost of the module under way (see :meth:`renew_vhost`)."""

    amqp_url: str
    database_url: str
    rabbitmqctl: list[str]
    postgres_ctl: list[str] | None
    vhosts: Vhosts

    def rabbit(self, *args: str) -> str:
        return _run_rabbitmqctl(self.rabbitmqctl, *args)

    def renew_vhost(self) -> None:
        """Move on to a new, empty vhost, the old one deleted behind. Every quorum queue holds
        files open in the broker; a whole session's worth of them (each test names its own)
        would exhaust a broker's default limit of file descriptors."""
        old = unquote(urlsplit(self.amqp_url).path.lstrip("/"))
        self.amqp_url = _with_vhost(self.amqp_url, self.vhosts.take())
        self.vhosts.drop(old)

    def forget_accounts(self) -> None:
        """Tombstone every provider account the scheduler and the poller know in the session's
        database, as if deleted, and take back the gateway's grants to everyone: the next
        module's services neither place on nor poll nor price what an earlier module registered
        (the simulated cloud, one per session, still answers for it)."""
        _blocking(_forget_accounts(self.database_url))

    @contextlib.contextmanager
    def isolated(self) -> Iterator[tuple[str, str]]:
        """A further vhost and database of its own, for a whole stack started by a test."""
        name = self.vhosts.take()
        try:
            yield _with_vhost(self.amqp_url, name), _with_db(self.database_url, name)
        finally:
            self.vhosts.drop(name)
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

        vhosts = Vhosts(
            functools.partial(_run_rabbitmqctl, rabbitmqctl),
            urlsplit(amqp_url).username or "guest",
        )
        name = vhosts.take()  # the session's database is named after its first vhost
        infra = Infrastructure(
            amqp_url=_with_vhost(amqp_url, name),
            database_url=_with_db(database_url, name),
            rabbitmqctl=rabbitmqctl,
            postgres_ctl=postgres_ctl,
            vhosts=vhosts,
        )
        try:
            yield infra
        finally:
            vhosts.drop(unquote(urlsplit(infra.amqp_url).path.lstrip("/")))
            vhosts.close()
            _drop_database_blocking(database_url, name)


def _run_rabbitmqctl(rabbitmqctl: list[str], *args: str) -> str:
    done = subprocess.run([*rabbitmqctl, *args], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {done.stderr or done.stdout}")
    return done.stdout


def _drop_database_blocking(server_url: str, name: str) -> None:
    _blocking(_drop_database(server_url, name))


def _blocking(work: Coroutine[Any, Any, None]) -> None:
    # In a thread of its own: callers may already be inside the test session's event loop.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, work).result(timeout=60)


async def _forget_accounts(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        for schema in ("scheduler", "poller"):
            if await conn.fetchval("SELECT to_regclass($1)", f"{schema}.accounts"):
                await conn.execute(f"UPDATE {schema}.accounts SET deleted = true WHERE NOT deleted")
        if await conn.fetchval("SELECT to_regclass('gateway.account_grants')"):
            # Users are new in every test; only a grant to everyone reaches another module's.
            await conn.execute("DELETE FROM gateway.account_grants WHERE grantee = '*'")
    finally:
        await conn.close()


async def _drop_database(server_url: str, name: str) -> None:
    conn = await asyncpg.connect(_with_db(server_url, "postgres"))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
