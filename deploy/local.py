"""`make run`: the whole Boreas stack as local processes, stopped together by Ctrl-C.

Checks that RabbitMQ and PostgreSQL answer at BOREAS_AMQP_URL / BOREAS_DATABASE_URL (starting them
with `docker compose` where a Docker engine exists, otherwise saying exactly what to start), then
starts the simulated cloud (http://127.0.0.1:8090, state in its own schema) and the five services,
waits until `/v1/status` shows each alive, and supervises them: on Ctrl-C or SIGTERM every process
gets SIGTERM, and whatever has not exited 10 s later gets SIGKILL.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: make the project importable

from shared.reachability import unreachable  # noqa: E402
from shared.services import SERVICES  # noqa: E402

STOP_GRACE = 10.0
READY_TIMEOUT = 60.0
# The workers' probe listeners (/metrics, /healthz, /readyz), one port each on this machine.
PROBE_PORTS = {"scheduler": 9101, "poller": 9102, "quota": 9103, "notifier": 9104}

START_HINT = """\
Start them, then run `make run` again:
  RabbitMQ:   rabbitmq-server -detached
  PostgreSQL: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start
(or point BOREAS_AMQP_URL / BOREAS_DATABASE_URL at running ones)."""


def say(message: str) -> None:
    print(f"boreas | {message}", file=sys.stderr, flush=True)


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        creds, _, host = rest.rpartition("@")
        user = creds.split(":", 1)[0]
        return f"{scheme}{sep}{user}:***@{host}" if ":" in creds else f"{scheme}{sep}{user}@{host}"
    return url


def docker_engine_available() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


def ensure_infrastructure(amqp_url: str, database_url: str) -> None:
    missing = asyncio.run(unreachable(amqp_url, database_url))
    if not missing:
        return
    if docker_engine_available():
        say("starting RabbitMQ and PostgreSQL with docker compose")
        compose = ["docker", "compose", "-f", str(ROOT / "deploy" / "compose.yaml")]
        subprocess.run([*compose, "up", "-d", "--wait", "rabbitmq", "postgres"], check=True)
        missing = asyncio.run(unreachable(amqp_url, database_url))
        if not missing:
            return
    say(f"cannot reach {' and '.join(missing)} at {_redact(amqp_url)} / {_redact(database_url)}.")
    say(START_HINT)
    sys.exit(2)


def start(module: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    # Each process in its own session: a terminal's Ctrl-C reaches only this supervisor, which
    # then stops them in order instead of all of them racing on SIGINT.
    return subprocess.Popen(
        [sys.executable, "-m", module],
        cwd=ROOT,
        start_new_session=True,
        env={**os.environ, **(env or {})},
    )


def status_url() -> str:
    port = os.environ.get("BOREAS_GATEWAY_PORT", "8080")
    return f"http://127.0.0.1:{port}/v1/status"


def all_alive() -> bool:
    try:
        with urllib.request.urlopen(status_url(), timeout=2) as response:
            services = json.load(response)["services"]
    except (urllib.error.URLError, OSError, ValueError, KeyError):
        return False
    return all(services.get(name, {}).get("alive") for name in SERVICES)


def stop_all(children: dict[str, subprocess.Popen[bytes]]) -> None:
    for proc in children.values():
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE
    for name, proc in children.items():
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            say(f"{name} did not stop within {STOP_GRACE:.0f} s; killing it")
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def main() -> int:
    # A developer's stack on this machine: default secrets and loopback webhooks are fine here
    # (the services themselves default to prod). An exported BOREAS_ENV wins.
    os.environ.setdefault("BOREAS_ENV", "dev")
    amqp_url = os.environ.get("BOREAS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    database_url = os.environ.get(
        "BOREAS_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/boreas"
    )
    ensure_infrastructure(amqp_url, database_url)

    stopping = False

    def request_stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    children = {"simulator": start("shared.clouds.simulator")}
    children.update(
        {
            name: start(f"services.{name}", {"BOREAS_PROBE_PORT": str(PROBE_PORTS.get(name, 0))})
            for name in SERVICES
        }
    )
    say("started " + ", ".join(f"{n} (pid {p.pid})" for n, p in children.items()))
    began = time.monotonic()
    announced = False
    exit_code = 0
    while not stopping:
        dead = [name for name, proc in children.items() if proc.poll() is not None]
        if dead:
            say(f"{', '.join(dead)} exited unexpectedly; stopping the stack")
            exit_code = 1
            break
        if not announced and all_alive():
            announced = True
            say(f"all five services alive after {time.monotonic() - began:.1f} s")
            say(
                f"gateway: http://127.0.0.1:{os.environ.get('BOREAS_GATEWAY_PORT', '8080')}"
                "  (try: curl -s localhost:8080/v1/status)   Ctrl-C stops everything"
            )
        elif not announced and time.monotonic() - began > READY_TIMEOUT:
            say(f"not all services alive after {READY_TIMEOUT:.0f} s; see the logs above")
            announced = True
        time.sleep(0.5)
    say("stopping")
    stop_all(children)
    say("stopped")
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
