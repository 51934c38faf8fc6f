"""The whole stack as real processes, as `make run` starts it, on a vhost and database of its own:
for the benchmark and the fault suite, which measure it, kill parts of it and start them again.

Each service runs ``python -m services.<name>`` (as many replicas as asked), the simulated cloud
``python -m shared.clouds.simulator``; their logs go to files under ``logs``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from shared.credentials import new_key_text
from shared.services import SERVICES
from shared.testing import poll_until
from tests.processes import ROOT, answers, free_port

ADMIN_PASSWORD = "admin-password-for-the-system-under-test"


@dataclass
class Replica:
    service: str
    index: int
    process: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_seconds(self) -> float:
        """User and system CPU time the process has used so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0


@dataclass
class System:
    amqp_url: str
    database_url: str
    logs: Path
    env: dict[str, str]
    gateway_port: int = field(default_factory=free_port)
    simulator_port: int = field(default_factory=free_port)
    replicas: dict[str, list[Replica]] = field(default_factory=dict)
    simulator: subprocess.Popen[bytes] | None = None

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def simulator_url(self) -> str:
        return f"http://127.0.0.1:{self.simulator_port}"

    def _environment(self, service: str, index: int, overrides: dict[str, str]) -> dict[str, str]:
        return {
            # A developer's stack (guest broker account, loopback webhooks), as `make run` starts.
            "BOREAS_ENV": "dev",
            **os.environ,
            "BOREAS_AMQP_URL": self.amqp_url,
            "BOREAS_DATABASE_URL": self.database_url,
            "BOREAS_GATEWAY_PORT": str(self.gateway_port),
            "BOREAS_SIMULATOR_PORT": str(self.simulator_port),
            "BOREAS_SIMULATOR_URL": self.simulator_url,
            "BOREAS_REPLICA_ID": f"{service}-{index}",
            "BOREAS_PROBE_PORT": "0",  # replicas share this machine
            **self.env,
            **overrides,
        }

    def _spawn(self, module: str, name: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open("ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", module],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def start_simulator(self) -> None:
        env = self._environment("simulator", 0, {})
        self.simulator = self._spawn("shared.clouds.simulator", "simulator", env)
        poll_until(
            lambda: answers(f"{self.simulator_url}/v1/regions"), timeout=60, what="simulator up"
        )

    def start(self, service: str, *, index: int | None = None, **overrides: str) -> Replica:
        """Start one replica (a new one, or replica ``index`` again after it was killed)."""
        replicas = self.replicas.setdefault(service, [])
        number = len(replicas) if index is None else index
        env = self._environment(service, number, overrides)
        replica = Replica(
            service, number, self._spawn(f"services.{service}", f"{service}-{number}", env)
        )
        if index is None:
            replicas.append(replica)
        else:
            replicas[index] = replica
        return replica

    def kill(self, service: str, index: int = 0, sig: int = signal.SIGKILL) -> None:
        replica = self.replicas[service][index]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(replica.pid, sig)
        replica.process.wait(timeout=30)

    def all(self) -> list[Replica]:
        return [r for replicas in self.replicas.values() for r in replicas]

    def died(self) -> list[str]:
        return [
            f"{r.service}-{r.index} (exit {r.process.returncode})"
            for r in self.all()
            if r.process.poll() is not None
        ]

    def wait_alive(self, timeout: float = 90.0) -> None:
        """Until /v1/status shows every replica started alive (heartbeats through the bus)."""

        def alive() -> bool:
            assert not self.died(), f"exited during start-up: {self.died()}"
            try:
                response = httpx.get(f"{self.gateway_url}/v1/status", timeout=2)
            except httpx.TransportError:
                return False
            if response.status_code != 200:
                return False
            services = response.json()["services"]
            return all(
                services[name]["alive"] and services[name]["replicas"] >= len(replicas)
                for name, replicas in self.replicas.items()
            )

        poll_until(alive, timeout=timeout, interval=0.2, what="every service alive")

    def stop(self) -> None:
        processes = [r.process for r in self.all()]
        if self.simulator is not None:
            processes.append(self.simulator)
        for process in processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for process in processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@contextlib.contextmanager
def running_system(
    amqp_url: str,
    database_url: str,
    logs: Path,
    *,
    replicas: dict[str, int] | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[System]:
    """The simulated cloud and the five services (``replicas`` of each, default one), alive."""
    logs.mkdir(parents=True, exist_ok=True)
    system = System(
        amqp_url,
        database_url,
        logs,
        {
            "BOREAS_SECRET_KEY": new_key_text(),
            "BOREAS_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "BOREAS_LOG_LEVEL": "WARNING",
            "BOREAS_HEARTBEAT_INTERVAL": "1",
            "BOREAS_TOKEN_REQUESTS_PER_MINUTE": "100000",
            # The bench and the fault suite launch hundreds per user.
            "BOREAS_DEFAULT_QUOTA_INSTANCES": "unlimited",
            "BOREAS_DEFAULT_QUOTA_CPUS": "unlimited",
            "BOREAS_DEFAULT_QUOTA_MEMORY_MB": "unlimited",
            "BOREAS_LOGIN_FAILURES_PER_MINUTE": "100000",
            **(env or {}),
        },
    )
    try:
        system.start_simulator()
        counts = {name: 1 for name in SERVICES} | (replicas or {})
        # The gateway first: it creates the admin and the schemas others wait for.
        for name in sorted(counts, key=lambda n: n != "gateway"):
            for _ in range(counts[name]):
                system.start(name)
        system.wait_alive()
        yield system
    finally:
        system.stop()


# -- setting a running system up through its API ----------------------------------------------


async def login(client: httpx.AsyncClient, username: str, password: str) -> dict[str, str]:
    """The Authorization header of a fresh token."""
    response = await client.post("/v1/tokens", json={"username": username, "password": password})
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['token']}"}


async def new_user(
    client: httpx.AsyncClient, admin: dict[str, str], username: str, password: str
) -> dict[str, str]:
    """A user created by ``admin``, logged in."""
    created = await client.post(
        "/v1/users",
        json={"username": username, "password": password, "role": "user"},
        headers=admin,
    )
    created.raise_for_status()
    return await login(client, username, password)


async def add_simulator_accounts(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    system: System,
    count: int,
    *,
    simulator: dict,
    poll_interval: float,
    regions: tuple[str, ...] = ("north", "south"),
    grants: tuple[str, ...] = ("*",),
) -> list[str]:
    """``count`` accounts on the system's simulated cloud, each with these ``simulator``
    settings; their ids."""
    ids = []
    for _ in range(count):
        key = uuid.uuid4().hex[:10]
        created = await client.post(
            "/v1/provider-accounts",
            json={
                "name": f"sim-{key}",
                "provider": "simulator",
                "credentials": {"api_key": f"key-{key}", "api_secret": f"secret-{key}"},
                "config": {
                    "endpoint": system.simulator_url,
                    "regions": list(regions),
                    "poll_interval": poll_interval,
                    "simulator": simulator,
                },
                "grants": list(grants),
            },
            headers=admin,
        )
        created.raise_for_status()
        ids.append(created.json()["id"])
    return ids
