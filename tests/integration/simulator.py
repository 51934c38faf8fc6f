"""The simulated cloud as a real process on a free port, for tests that need a cloud."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

from tests.processes import answers, free_port, running_process


@contextlib.contextmanager
def simulator_process(database_url: str, port: int | None = None) -> Iterator[str]:
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "BOREAS_DATABASE_URL": database_url, "BOREAS_SIMULATOR_PORT": str(port)}
    with running_process(
        [sys.executable, "-m", "shared.clouds.simulator"],
        env=env,
        ready=lambda: answers(f"{url}/v1/regions"),
    ):
        yield url
