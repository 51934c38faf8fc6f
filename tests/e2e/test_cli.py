"""The `boreas` command against the whole stack as processes (tests/system.py): an admin sets a
user up, she logs in, launches, watches her instance run, reads her events, terminates it,
exports her usage as CSV and logs out; a few exit codes of docs/cli.md on the way (the others:
tests/unit/test_cli_commands.py).

The command runs as the installed console script, a subprocess with its own XDG_CONFIG_HOME per
person, talking HTTP to the test gateway only."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.infra import Infrastructure
from tests.system import ADMIN_PASSWORD, System, running_system

BOREAS = Path(sys.executable).parent / "boreas"
ALICE_PASSWORD = "correct-horse-battery"


class Person:
    """Someone at a terminal of their own: a config directory and the gateway's URL."""

    def __init__(self, system: System, home: Path) -> None:
        self.home = home
        self.env = {
            key: value for key, value in os.environ.items() if not key.startswith("BOREAS_")
        } | {"BOREAS_URL": system.gateway_url, "XDG_CONFIG_HOME": str(home), "HOME": str(home)}

    @property
    def config(self) -> Path:
        return self.home / "boreas" / "config.toml"

    def run(
        self, *args: str, stdin: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BOREAS), *args],
            input=stdin,
            env=self.env | (env or {}),
            capture_output=True,
            text=True,
            timeout=50,
        )

    def ok(self, *args: str, stdin: str | None = None) -> str:
        done = self.run(*args, stdin=stdin)
        assert done.returncode == 0, f"boreas {' '.join(args)}: {done.returncode}\n{done.stderr}"
        return done.stdout


def test_login_launch_watch_terminate_and_usage_as_csv(
    infra: Infrastructure, tmp_path: Path
) -> None:
    with (
        infra.isolated() as (amqp_url, database_url),
        running_system(amqp_url, database_url, tmp_path / "logs") as system,
    ):
        admin, alice = Person(system, tmp_path / "admin"), Person(system, tmp_path / "alice")

        not_yet = alice.run("instances", "list")
        assert not_yet.returncode == 3, not_yet.stderr
        assert "boreas login" in not_yet.stderr

        admin.ok("login", "--username", "admin", "--password-stdin", stdin=ADMIN_PASSWORD + "\n")
        assert stat.S_IMODE(admin.config.stat().st_mode) == 0o600
        admin.ok("users", "create", "alice", "--password-stdin", stdin=ALICE_PASSWORD + "\n")
        credentials = json.dumps({"api_key": "team", "api_secret": "do-not-share"})
        config = {"endpoint": system.simulator_url, "regions": ["north"], "poll_interval": 0.5}
        admin.ok(
            "accounts", "create", "team-sim", "--provider", "simulator",
            "--credentials-file", "-", "--config", json.dumps(config), "--grant", "alice",
            stdin=credentials,
        )  # fmt: skip

        alice.ok("login", "-u", "alice", "--password-stdin", stdin=ALICE_PASSWORD + "\n")
        stored = tomllib.loads(alice.config.read_text())
        assert stored["username"] == "alice" and stored["url"] == system.gateway_url
        assert stat.S_IMODE(alice.config.stat().st_mode) == 0o600

        launched = json.loads(
            alice.ok(
                *"instances launch web-1 --image debian-12 --cpus 2 --memory-mb 2048".split(),
                *"--region north -o json".split(),
            )
        )
        assert launched["state"] == "requested" and launched["owner"] == "alice"
        instance_id = launched["id"]

        # The watch is the wait: it returns once the instance runs, each change a JSON line.
        watched = alice.ok("instances", "watch", "web-1", "--timeout", "45", "-o", "json")
        states = [json.loads(line)["state"] for line in watched.splitlines()]
        assert states[-1] == "running", watched
        assert {json.loads(line)["id"] for line in watched.splitlines()} == {instance_id}

        # Her events from the start of the feed: the backlog she was not connected for.
        tailed = alice.ok(
            *"events tail --since 0 --topic instance.state_changed --count 1 -o json".split()
        )
        event = json.loads(tailed)
        assert event["type"] == "boreas.instance.state_changed.v1"
        assert event["subject"] == instance_id

        terminated = alice.ok("instances", "terminate", instance_id, "--wait", "--timeout", "45")
        assert terminated.splitlines()[-1].endswith("→ terminated"), terminated

        again = alice.run("instances", "stop", instance_id)
        assert again.returncode == 5, again.stderr  # 409: not running
        assert again.stderr.startswith("boreas: Conflict: ") and "Traceback" not in again.stderr

        report = alice.ok("usage", "--csv")
        rows = list(csv.DictReader(io.StringIO(report)))
        assert [(r["owner"], r["account"]) for r in rows] == [("alice", "team-sim")], report
        assert float(rows[0]["instance_hours"]) > 0
        assert float(rows[0]["cpu_hours"]) == pytest.approx(
            2 * float(rows[0]["instance_hours"]), abs=1e-5
        )

        token = tomllib.loads(alice.config.read_text())["token"]
        alice.ok("logout")
        assert "token" not in tomllib.loads(alice.config.read_text())
        revoked = alice.run("whoami", env={"BOREAS_TOKEN": token})
        assert revoked.returncode == 3, revoked.stderr
