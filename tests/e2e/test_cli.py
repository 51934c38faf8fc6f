"""The `boreas` command against the whole stack as processes (tests/system.py): an admin sets a
user up, she logs in, launches, watches her instance run, reads her events, terminates it,
exports her usage with its cost as CSV; the admin gives her a lease policy and an approval rule,
her large launch waits for approval and runs once the admin approves it; she creates a
deployment from docs/examples/web-and-db.yaml, watches it run, scales it down and up and deletes
it; she logs out. A few exit codes of docs/cli.md on the way (the others:
tests/unit/test_cli_commands.py and test_cli_deployments.py).

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
from datetime import datetime
from pathlib import Path

import pytest

from shared.testing import poll_until
from tests.infra import Infrastructure
from tests.system import ADMIN_PASSWORD, System, running_system

BOREAS = Path(sys.executable).parent / "boreas"
WEB_AND_DB = Path(__file__).resolve().parents[2] / "docs" / "examples" / "web-and-db.yaml"
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
        # The cost: its running hours at the price of the size it was placed on.
        price = json.loads(alice.ok("instances", "show", instance_id, "-o", "json"))
        assert price["price_per_hour"] is not None and price["price_per_hour"] > 0, price
        assert float(rows[0]["cost"]) == pytest.approx(
            float(rows[0]["instance_hours"]) * price["price_per_hour"], abs=1e-4
        )

        held_launch_is_approved_through_the_cli(admin, alice)
        deployment_through_the_cli(admin, alice, system)

        token = tomllib.loads(alice.config.read_text())["token"]
        alice.ok("logout")
        assert "token" not in tomllib.loads(alice.config.read_text())
        revoked = alice.run("whoami", env={"BOREAS_TOKEN": token})
        assert revoked.returncode == 3, revoked.stderr


def held_launch_is_approved_through_the_cli(admin: Person, alice: Person) -> None:
    """A lease policy and an approval rule set with the CLI; alice's large launch, with a lease,
    waits for approval; the admin approves it with a comment and it runs."""
    policy = json.loads(
        admin.ok(
            *"lease-policies set alice --default 1h --max 1d".split(),
            *"--on-expiry terminate --warn 5m -o json".split(),
        )
    )
    assert policy == {
        "username": "alice",
        "default_seconds": 3600,
        "max_seconds": 86400,
        "on_expiry": "terminate",
        "warn_seconds": 300,
    }
    rules = "rules:\n  - name: big\n    when: {cpus_over: 2}\n"
    set_rules = json.loads(admin.ok("approval-rules", "set", "-f", "-", "-o", "json", stdin=rules))
    assert [rule["name"] for rule in set_rules["rules"]] == ["big"]

    over_max = alice.run(*"instances launch big-1 --image debian-12 --cpus 4 --lease 2d".split())
    assert over_max.returncode == 1, over_max.stderr  # 422: past the policy's max

    launched = json.loads(
        alice.ok(
            *"instances launch big-1 --image debian-12 --cpus 4 --memory-mb 2048".split(),
            *"--region north --lease 2h -o json".split(),
        )
    )
    assert launched["expires_at"] is not None

    def held() -> dict[str, object] | None:
        found = json.loads(alice.ok("instances", "show", launched["id"], "-o", "json"))
        assert found["state"] in ("requested", "awaiting_approval"), found
        return found if found["state"] == "awaiting_approval" else None

    poll_until(held, timeout=30, interval=0.2, what="big-1 awaiting approval")
    shown = alice.run("instances", "show", "big-1")
    assert "big-1 awaits an admin's approval" in shown.stderr, shown.stderr

    refused = alice.run("instances", "approve", launched["id"])
    assert refused.returncode == 4, refused.stderr  # 403: admins only

    approved = admin.ok(
        "instances", "approve", launched["id"], "--comment", "e2e: approved",
        "--wait", "--timeout", "45",
    )  # fmt: skip
    last = approved.splitlines()[-1]
    assert "big-1" in last and last.endswith("running"), approved

    again = admin.run("instances", "deny", launched["id"])
    assert again.returncode == 5, again.stderr  # 409: no longer awaiting approval

    extended = json.loads(alice.ok("instances", "extend", "big-1", "--by", "1h", "-o", "json"))
    assert datetime.fromisoformat(extended["expires_at"]) > datetime.fromisoformat(
        launched["expires_at"]
    )
    alice.ok("instances", "terminate", "big-1", "--wait", "--timeout", "45")


def deployment_through_the_cli(admin: Person, alice: Person, system: System) -> None:
    """A second account for alice; she creates the web-and-db example from its file (a database,
    then two web servers spread across her two accounts), watches it to running, scales the web
    servers down and up again, and deletes it: web servers first, then the database. A template
    with a cycle is refused at its pointer."""
    config = {"endpoint": system.simulator_url, "regions": ["north"], "poll_interval": 0.5}
    admin.ok(
        "accounts", "create", "team-sim-b", "--provider", "simulator",
        "--credentials-file", "-", "--config", json.dumps(config), "--grant", "alice",
        stdin=json.dumps({"api_key": "team-b", "api_secret": "do-not-share-either"}),
    )  # fmt: skip

    parameters = ["db_image=debian-12", "web_image=alpine-3", "db_account=team-sim"]
    created = json.loads(
        alice.ok(
            *["deployments", "create", "-f", str(WEB_AND_DB), "--name", "shop", "-o", "json"],
            *[option for p in parameters for option in ("--param", p)],
        )
    )
    assert created["state"] == "requested", created
    assert [(g["name"], len(g["instances"])) for g in created["groups"]] == [("db", 1), ("web", 2)]
    deployment_id = created["id"]

    watched = alice.ok("deployments", "watch", "shop", "--timeout", "45", "-o", "json")
    seen = [json.loads(line) for line in watched.splitlines()]
    assert seen[-1]["state"] == "running", watched
    for step in seen:  # no web server was launched before the database ran
        states = {g["name"]: [i["state"] for i in g["instances"]] for g in step["groups"]}
        if any(state != "requested" for state in states["web"]):
            assert states["db"] == ["running"], step
    members = [
        i
        for i in json.loads(alice.ok("instances", "list", "-o", "json"))
        if i.get("deployment_id") == deployment_id
    ]
    assert sorted((i["name"], i["group"], i["state"]) for i in members) == [
        ("shop-db-1", "db", "running"),
        ("shop-web-1", "web", "running"),
        ("shop-web-2", "web", "running"),
    ]
    assert len({i["account_id"] for i in members if i["group"] == "web"}) == 2  # spread

    alice.ok("deployments", "scale", "shop", "web", "1", "--wait", "--timeout", "45")
    web = _group(alice, deployment_id, "web")
    assert sorted(i["state"] for i in web) == ["running", "terminated"], web

    too_wide = alice.run("deployments", "scale", "shop", "web", "3")
    assert too_wide.returncode == 1, too_wide.stderr  # 422: only two accounts to spread over
    assert "/count: spread across accounts: 3 instances need 3 accounts" in too_wide.stderr

    alice.ok("deployments", "scale", "shop", "web", "2", "--wait", "--timeout", "45")
    web = _group(alice, deployment_id, "web")
    assert [i["name"] for i in web if i["state"] == "running"] == ["shop-web-1", "shop-web-3"]

    deleting = alice.ok("deployments", "delete", "shop", "--wait", "--timeout", "45", "-o", "json")
    steps = [json.loads(line) for line in deleting.splitlines()]
    assert steps[-1]["state"] == "deleted", deleting
    for step in steps:  # the database was terminated only once every web server was
        states = {g["name"]: [i["state"] for i in g["instances"]] for g in step["groups"]}
        if states["db"] != ["running"]:
            assert set(states["web"]) == {"terminated"}, step
    final = json.loads(alice.ok("deployments", "show", deployment_id, "-o", "json"))
    assert final["state"] == "deleted"
    assert {i["state"] for g in final["groups"] for i in g["instances"]} == {"terminated"}

    cycle = (
        "groups:\n"
        "  - {name: app, count: 1, image: debian-12, cpus: 1, memory_mb: 512, after: [web]}\n"
        "  - {name: web, count: 1, image: alpine-3, cpus: 1, memory_mb: 512, after: [app]}\n"
    )
    refused = alice.run("deployments", "create", "-f", "-", "--name", "loop", stdin=cycle)
    assert refused.returncode == 1, refused.stderr
    assert refused.stderr == (
        "boreas: Invalid request: /template/groups/0/after/0: these groups wait for each other: "
        "app → web → app\n"
    )


def _group(person: Person, deployment_id: str, group: str) -> list[dict[str, str]]:
    shown = json.loads(person.ok("deployments", "show", deployment_id, "-o", "json"))
    (found,) = [g for g in shown["groups"] if g["name"] == group]
    return list(found["instances"])
