"""Real processes for tests (the simulated cloud, mimic, the gateway): start, wait, stop."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import httpx

from shared.testing import poll_until

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(url: str, accept: Callable[[httpx.Response], bool] = lambda _r: True) -> bool:
    try:
        return accept(httpx.get(url, timeout=1))
    except httpx.TransportError:
        return False


@contextlib.contextmanager
def running_process(
    command: list[str],
    *,
    ready: Callable[[], bool],
    env: dict[str, str] | None = None,
    cwd: Path = ROOT,
    output: IO[bytes] | int = subprocess.DEVNULL,
    timeout: float = 60,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``command``, wait until ``ready()``, and terminate it (SIGTERM) on the way out."""
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT)

    def up() -> bool:
        assert proc.poll() is None, f"{command[0]} exited during start-up"
        return ready()

    try:
        poll_until(up, timeout=timeout, what=f"{' '.join(command[:3])} ready")
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=15)


@contextlib.contextmanager
def simulator_process(database_url: str, port: int | None = None) -> Iterator[str]:
    """The simulated cloud as a real process on a free port, keeping its state in ``database_url``;
    yields its base URL."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "BOREAS_DATABASE_URL": database_url, "BOREAS_SIMULATOR_PORT": str(port)}
    with running_process(
        [sys.executable, "-m", "shared.clouds.simulator"],
        env=env,
        ready=lambda: answers(f"{url}/v1/regions"),
    ):
        yield url


@contextlib.contextmanager
def gateway_process(
    amqp_url: str,
    database_url: str,
    *,
    admin_password: str,
    settings: dict[str, str] | None = None,
    output: IO[bytes] | int = subprocess.DEVNULL,
) -> Iterator[str]:
    """The gateway as a real process on a free port against this broker and database, ``settings``
    (``BOREAS_*`` variables) added to its environment; yields its base URL once it is ready."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "BOREAS_AMQP_URL": amqp_url,
        "BOREAS_DATABASE_URL": database_url,
        "BOREAS_GATEWAY_PORT": str(port),
        "BOREAS_ADMIN_PASSWORD": admin_password,
        **(settings or {}),
    }
    with running_process(
        [sys.executable, "-m", "services.gateway"],
        env=env,
        output=output,
        ready=lambda: answers(f"{url}/readyz", lambda r: r.status_code == 200),
    ):
        yield url
