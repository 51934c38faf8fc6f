"""Quota counts a rejected launch, by the limit that refused it, once its decision committed."""

from __future__ import annotations

import uuid

from prometheus_client import REGISTRY

from services.quota.accounting import Amounts, Limits
from services.quota.handlers import decide_launches
from shared.events import InstanceLaunchRequested
from tests.fakes import FakeBatchUnitOfWork, FakeDecisionsRepository, received


def counted(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def launch(cpus: int) -> InstanceLaunchRequested:
    return InstanceLaunchRequested(
        instance_id=uuid.uuid4(), owner="alice", name="vm", image="ubuntu", cpus=cpus, memory_mb=1
    )


async def test_rejections_count_after_the_commit_by_limit() -> None:
    uow = FakeBatchUnitOfWork()
    repo = FakeDecisionsRepository(uow.conn)
    repo.limits["alice"] = Limits(instances=5, cpus=4)
    repo.usage["alice"] = Amounts(1, 3, 512)
    before = (
        counted("boreas_launches_total", outcome="rejected"),
        counted("boreas_quota_rejections_total", limit="cpus"),
        counted("boreas_quota_rejections_total", limit="instances"),
    )

    await decide_launches(received(launch(cpus=2), launch(cpus=1), launch(cpus=3)), uow, repo=repo)
    assert counted("boreas_launches_total", outcome="rejected") == before[0]  # not committed yet
    uow.commit()

    # cpus=1 fits (3 + 1 = 4); the two others pass the cpus limit.
    assert counted("boreas_launches_total", outcome="rejected") == before[0] + 2
    assert counted("boreas_quota_rejections_total", limit="cpus") == before[1] + 2
    assert counted("boreas_quota_rejections_total", limit="instances") == before[2]
