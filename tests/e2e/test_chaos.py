"""The fault suite, short: one round of faults under a light launch load (make chaos runs more).

See tests/chaos.py: RabbitMQ and PostgreSQL restarted, one replica of each service killed with
SIGKILL and started again; nothing lost, nothing stuck, no drift, no service dead on its own.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos import run_chaos
from tests.infra import Infrastructure

pytestmark = pytest.mark.chaos


@pytest.mark.timeout(600)
async def test_faults_under_load_lose_nothing(infra: Infrastructure, tmp_path: Path) -> None:
    report = await run_chaos(infra, tmp_path / "logs", rate=6, rounds=1)
    print(report.table())
    assert report.ok, report.table()
    assert report.accepted > 0 and report.changes_recorded > 0
