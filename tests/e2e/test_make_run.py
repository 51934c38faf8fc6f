"""`make run` from the README: all five services alive within 60 s; Ctrl-C leaves nothing behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from shared.services import SERVICES
from shared.testing import wait_until
from tests.infra import Infrastructure
from tests.processes import free_port

ROOT = Path(__file__).resolve().parents[2]


def processes_with_env(marker: str) -> list[int]:
    """PIDs of live processes whose environment contains ``marker`` (our unique database URL)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and marker.encode() in environ:
            found.append(int(entry.name))
    return found


async def all_alive(client: httpx.AsyncClient) -> dict | None:
    try:
        response = await client.get("/v1/status")
    except httpx.TransportError:
        return None
    if response.status_code != 200:
        return None
    services = response.json()["services"]
    return services if all(services[name]["alive"] for name in SERVICES) else None


async def test_make_run_brings_up_every_service_and_ctrl_c_stops_them_all(
    infra: Infrastructure, tmp_path: Path
) -> None:
    port = free_port()
    log_path = tmp_path / "make-run.log"
    with infra.isolated() as (amqp_url, database_url):
        env = {
            **os.environ,
            "BOREAS_AMQP_URL": amqp_url,
            "BOREAS_DATABASE_URL": database_url,
            "BOREAS_GATEWAY_PORT": str(port),
            "BOREAS_SIMULATOR_PORT": str(free_port()),
            "BOREAS_HEARTBEAT_INTERVAL": "1",
        }
        with log_path.open("wb") as log:
            make = subprocess.Popen(  # noqa: ASYNC220 - spawns and returns at once
                ["make", "run"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, as a terminal gives it
            )
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                try:
                    services = await wait_until(
                        lambda: all_alive(client), timeout=60, what="all five services alive"
                    )
                except TimeoutError:
                    raise AssertionError(log_path.read_text()[-6000:]) from None
            assert set(services) == set(SERVICES)
            started = re.findall(r"(\w+) \(pid (\d+)\)", log_path.read_text())
            assert {name for name, _ in started} == {*SERVICES, "simulator"}
            assert len(processes_with_env(database_url)) >= len(SERVICES) + 1
        finally:
            os.killpg(make.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
            began = time.monotonic()
            make.wait(timeout=30)
        stopped_after = time.monotonic() - began

        left = processes_with_env(database_url)
        output = log_path.read_text()
        assert left == [], f"processes left behind: {left}\n{output[-3000:]}"
        assert "boreas | stopped" in output
        assert "did not stop within" not in output, output[-3000:]
        assert stopped_after < 12, f"stopping took {stopped_after:.1f} s"


@pytest.mark.parametrize("service", [s for s in SERVICES if s != "gateway"])
def test_worker_service_exits_cleanly_on_sigterm(infra: Infrastructure, service: str) -> None:
    with infra.isolated() as (amqp_url, database_url):
        env = {**os.environ, "BOREAS_AMQP_URL": amqp_url, "BOREAS_DATABASE_URL": database_url}
        proc = subprocess.Popen(
            [sys.executable, "-m", f"services.{service}"],
            cwd=ROOT,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        lines = []
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if "service_started" in line:
                break
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=10)
        assert proc.returncode == 0, "".join(lines) + rest
        assert "service_stopped" in rest


def test_sigterm_ends_the_wait_for_an_unreachable_broker(infra: Infrastructure) -> None:
    env = {
        **os.environ,
        "BOREAS_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/",  # nothing listens on port 1
        "BOREAS_DATABASE_URL": infra.database_url,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.quota"],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if "waiting_for_dependency" in line:
            break
    proc.send_signal(signal.SIGTERM)
    _, rest = proc.communicate(timeout=10)
    assert proc.returncode == 0, rest
    assert "service_stopped" in rest
