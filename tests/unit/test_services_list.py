"""shared.services.SERVICES is the one list of services: it matches the code and compose.yaml."""

import re
from pathlib import Path

from shared.services import SERVICES

ROOT = Path(__file__).resolve().parents[2]


def test_each_service_package_is_listed_and_each_listed_one_exists() -> None:
    packages = {main.parent.name for main in (ROOT / "services").glob("*/__main__.py")}
    assert packages == set(SERVICES)
    assert len(SERVICES) == len(set(SERVICES))


def test_compose_runs_each_listed_service_with_its_module() -> None:
    compose = (ROOT / "deploy" / "compose.yaml").read_text()
    started = set(re.findall(r'command: \["python", "-m", "services\.(\w+)"\]', compose))
    assert started == set(SERVICES)
