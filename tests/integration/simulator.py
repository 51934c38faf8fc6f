"""The simulated cloud as a real process on a free port, for tests that need a cloud."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def simulator_process(database_url: str, port: int | None = None) -> Iterator[str]:
    port = port or _free_port()
    env = {**os.environ, "BOREAS_DATABASE_URL": database_url, "BOREAS_SIMULATOR_PORT": str(port)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "shared.clouds.simulator"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, "the simulated cloud exited during start-up"
            try:
                httpx.get(f"{url}/v1/regions", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)  # a port that is not open yet has no event to wait on
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
