"""The alert rules in deploy/prometheus/alerts.yaml read only exported series, and each says
how long, how bad, what and where its runbook is (an entry of docs/operations.md). Where
promtool is installed (Debian's `prometheus` package), it checks the rules and runs their unit
tests (alerts.test.yaml): each alert fires on what it is about and not on a healthy series."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml

import shared.metrics  # noqa: F401  (every series is defined there, as the services import it)
from shared.metrics import exposition
from tests.contract.promql import PROMETHEUS_SERIES, declared_names, metric_names

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yaml"
OPERATIONS = ROOT / "docs" / "operations.md"


def rules() -> list[dict]:
    return [
        rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    ]


def anchors() -> set[str]:
    """GitHub's anchors of docs/operations.md's headings."""
    headings = re.findall(r"^#+ (.+)$", OPERATIONS.read_text(), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}


def test_every_rule_is_complete_and_reads_exported_series() -> None:
    exported = declared_names(exposition()[0].decode()) | PROMETHEUS_SERIES
    runbooks = anchors()
    found = rules()
    assert len(found) >= 6
    for rule in found:
        name = rule["alert"]
        assert re.fullmatch(r"Boreas[A-Z]\w+", name), name
        assert re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))), f"{name}: no `for`"
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert rule["annotations"]["summary"], name
        document, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert document == "docs/operations.md" and anchor in runbooks, f"{name}: no runbook"
        names = metric_names(rule["expr"])
        assert names and names <= exported, f"{name}: {sorted(names - exported)} not exported"


def test_no_rule_labels_a_user_instance_or_account() -> None:
    for rule in rules():
        assert not re.search(r"\b(owner|instance_id|account_id|account)\b", rule["expr"]), rule


PROMTOOL = shutil.which("promtool")


def test_promtool_checks_the_rules_and_runs_their_tests() -> None:
    assert PROMTOOL is not None, "promtool is missing: apt-get install prometheus (.ci/run does)"
    for command in (["check", "rules", "alerts.yaml"], ["test", "rules", "alerts.test.yaml"]):
        done = subprocess.run(
            [PROMTOOL, *command], cwd=RULES.parent, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stdout + done.stderr
