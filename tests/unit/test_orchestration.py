"""Deployments as a level-triggered state machine: the next steps follow from the members'
states alone, so asking twice, or after a restart, asks for nothing new."""

from __future__ import annotations

import uuid

from services.scheduler.orchestration import (
    DeploymentState as D,
)
from services.scheduler.orchestration import (
    Member,
    Steps,
    next_steps,
    observed,
)
from services.scheduler.orchestration import (
    MemberState as M,
)
from shared.templates import parse


def template(on_failure: str = "rollback"):
    def group(name: str, count: int, after: list[str]) -> dict:
        return {
            "name": name,
            "count": count,
            "image": "i",
            "cpus": 1,
            "memory_mb": 512,
            "after": after,
        }

    return parse(
        {
            "groups": [group("web", 2, ["app"]), group("app", 1, ["db"]), group("db", 1, [])],
            "on_failure": on_failure,
        }
    )


class Deployment:
    """Members by name (``db0``, ``app0``, ``web0``, ``web1``) with stable ids."""

    def __init__(self, **states: M) -> None:
        self.ids = {
            name: uuid.uuid5(uuid.NAMESPACE_OID, name) for name in ("db0", "app0", "web0", "web1")
        }
        self.states = {name: M.WAITING for name in self.ids} | states
        self.failures: dict[str, str] = {}
        self.held: set[str] = set()
        self.removed: set[str] = set()

    def fail(self, name: str, why: str, state: M = M.FAILED) -> None:
        self.states[name], self.failures[name] = state, why

    def members(self) -> list[Member]:
        return [
            Member(
                self.ids[n],
                n[:-1],
                self.states[n],
                self.failures.get(n),
                held=n in self.held,
                removed=n in self.removed,
            )
            for n in self.ids
        ]

    def of(self, *names: str) -> tuple[uuid.UUID, ...]:
        return tuple(self.ids[n] for n in names)


def steps(
    d: Deployment, *, on_failure: str = "rollback", deleting: bool = False, state: D = D.CREATING
) -> Steps:
    return next_steps(template(on_failure), state, d.members(), deleting=deleting)


def test_groups_start_in_dependency_order() -> None:
    d = Deployment()
    assert steps(d) == Steps(D.CREATING, launch=d.of("db0"))
    d.states["db0"] = M.LAUNCHING
    assert steps(d) == Steps(D.CREATING)  # nothing new while db is on its way
    d.states["db0"] = M.RUNNING
    assert steps(d) == Steps(D.CREATING, launch=d.of("app0"))
    d.states["app0"] = M.RUNNING
    assert steps(d) == Steps(D.CREATING, launch=d.of("web0", "web1"))
    d.states.update(web0=M.RUNNING, web1=M.RUNNING)
    assert steps(d) == Steps(D.RUNNING)


def test_a_group_waits_until_every_member_of_what_it_follows_runs() -> None:
    d = Deployment(db0=M.RUNNING, app0=M.RUNNING, web0=M.RUNNING, web1=M.LAUNCHING)
    assert steps(d) == Steps(D.CREATING)


def test_nothing_happens_before_admission_or_after_the_end() -> None:
    d = Deployment()
    for state in (D.REQUESTED, D.REJECTED, D.DELETED):
        assert steps(d, state=state) == Steps(state)


def test_rollback_ends_what_was_made_cancels_the_rest_then_fails() -> None:
    d = Deployment(db0=M.RUNNING)
    d.fail("app0", "no account could launch it")
    first = steps(d)
    assert first.state is D.CREATING
    assert first.terminate == d.of("db0", "app0")  # app0 may have left a node behind
    assert first.cancel == d.of("web0", "web1")
    assert "app instance" in (first.reason or "") and "no account could launch it" in (
        first.reason or ""
    )
    d.states.update(db0=M.TERMINATING, app0=M.TERMINATING, web0=M.CANCELLED, web1=M.CANCELLED)
    assert steps(d).terminate == () and steps(d).state is D.CREATING
    d.states.update(db0=M.TERMINATED, app0=M.TERMINATED)
    final = steps(d)
    assert final.state is D.FAILED and final.failed == d.of("app0")


def test_keep_settles_what_it_can_and_ends_degraded_naming_the_failed() -> None:
    d = Deployment(db0=M.RUNNING, app0=M.RUNNING, web0=M.LAUNCHING)
    d.fail("web1", "capacity exhausted")
    assert steps(d, on_failure="keep") == Steps(D.CREATING)  # web0 is still on its way
    d.states["web0"] = M.RUNNING
    degraded = steps(d, on_failure="keep")
    assert degraded.state is D.DEGRADED
    assert degraded.failed == d.of("web1")
    assert degraded.terminate == ()
    assert f"web instance {d.ids['web1']} failed: capacity exhausted" in (degraded.reason or "")


def test_keep_cancels_the_groups_that_wait_for_a_failed_one() -> None:
    d = Deployment()
    d.fail("db0", "image not found")
    degraded = steps(d, on_failure="keep")
    assert degraded.state is D.DEGRADED
    assert degraded.cancel == d.of("web0", "web1", "app0")  # in the template's order
    assert "not started because a group they wait for failed: app, web" in (degraded.reason or "")


def test_deleting_ends_the_last_wave_first() -> None:
    d = Deployment(db0=M.RUNNING, app0=M.RUNNING, web0=M.RUNNING, web1=M.RUNNING)
    assert steps(d, deleting=True, state=D.RUNNING) == Steps(
        D.DELETING, terminate=d.of("web0", "web1")
    )
    d.states.update(web0=M.TERMINATING, web1=M.TERMINATED)
    assert steps(d, deleting=True, state=D.DELETING) == Steps(D.DELETING)
    d.states["web0"] = M.TERMINATED
    assert steps(d, deleting=True, state=D.DELETING) == Steps(D.DELETING, terminate=d.of("app0"))
    d.states["app0"] = M.TERMINATED
    assert steps(d, deleting=True, state=D.DELETING) == Steps(D.DELETING, terminate=d.of("db0"))
    d.states["db0"] = M.TERMINATED
    assert steps(d, deleting=True, state=D.DELETING) == Steps(D.DELETED)


def test_deleting_mid_creation_cancels_what_never_launched_at_once() -> None:
    d = Deployment(db0=M.RUNNING, app0=M.LAUNCHING)
    assert steps(d, deleting=True) == Steps(
        D.DELETING, terminate=d.of("app0"), cancel=d.of("web0", "web1")
    )


def test_deleting_a_degraded_deployment_ends_its_failed_members_too() -> None:
    d = Deployment(db0=M.RUNNING, app0=M.RUNNING, web0=M.RUNNING)
    d.fail("web1", "error in the cloud")
    assert steps(d, deleting=True, state=D.DEGRADED).terminate == d.of("web0", "web1")


def test_a_held_member_waits_for_approval_and_holds_its_group_back() -> None:
    d = Deployment(db0=M.RUNNING, app0=M.RUNNING)
    d.held.add("web1")
    assert steps(d) == Steps(D.CREATING, launch=d.of("web0"))
    d.states["web0"] = M.RUNNING
    assert steps(d) == Steps(D.CREATING)  # not running until web1 is approved and up
    d.held.clear()
    assert steps(d) == Steps(D.CREATING, launch=d.of("web1"))


def test_a_held_member_is_cancelled_with_the_rest_when_deleted() -> None:
    d = Deployment(db0=M.RUNNING)
    d.held.add("app0")
    assert steps(d, deleting=True).cancel == d.of("web0", "web1", "app0")  # template order


def test_a_denied_member_rolls_back_even_under_keep() -> None:
    d = Deployment(db0=M.RUNNING, app0=M.RUNNING, web0=M.RUNNING)
    d.fail("web1", "denied by admin: too big", M.DENIED)
    first = steps(d, on_failure="keep")
    assert first.state is D.CREATING
    assert first.terminate == d.of("db0", "app0", "web0")  # web1 never had a node
    assert "denied by admin: too big" in (first.reason or "")
    d.states.update(db0=M.TERMINATED, app0=M.TERMINATED, web0=M.TERMINATED)
    final = steps(d, on_failure="keep")
    assert final.state is D.FAILED and final.failed == d.of("web1")


def test_a_member_whose_launch_failed_has_nothing_to_terminate() -> None:
    d = Deployment(db0=M.RUNNING, app0=M.RUNNING, web0=M.RUNNING)
    d.fail("web1", "no candidate account could launch it", M.NOT_LAUNCHED)
    rollback = steps(d)
    assert rollback.terminate == d.of("db0", "app0", "web0")
    kept = steps(d, on_failure="keep")
    assert kept.state is D.DEGRADED and kept.failed == d.of("web1") and kept.terminate == ()


def test_scaling_down_ends_the_removed_and_stays_running() -> None:
    d = Deployment(db0=M.RUNNING, app0=M.RUNNING, web0=M.RUNNING, web1=M.RUNNING)
    d.removed.add("web1")
    assert steps(d, state=D.RUNNING) == Steps(D.RUNNING, terminate=d.of("web1"))
    d.states["web1"] = M.TERMINATING
    assert steps(d, state=D.RUNNING) == Steps(D.RUNNING)
    d.states["web1"] = M.TERMINATED
    assert steps(d, state=D.RUNNING) == Steps(D.RUNNING)


def test_a_removed_member_never_launched_is_cancelled_and_its_failure_forgotten() -> None:
    d = Deployment(db0=M.RUNNING, app0=M.RUNNING, web0=M.RUNNING)
    d.removed.add("web1")
    assert steps(d) == Steps(D.RUNNING, cancel=d.of("web1"))
    d.fail("web1", "error in the cloud")  # a removed member failing fails nothing
    assert steps(d) == Steps(D.RUNNING, terminate=d.of("web1"))


def test_scaling_up_launches_the_added_members_once_their_group_may_start() -> None:
    d = Deployment(db0=M.RUNNING, app0=M.RUNNING, web0=M.RUNNING)
    assert steps(d, state=D.RUNNING) == Steps(D.CREATING, launch=d.of("web1"))


def test_what_instance_events_make_of_a_member() -> None:
    assert observed(M.LAUNCHING, "pending") is M.LAUNCHING
    assert observed(M.LAUNCHING, "running") is M.RUNNING
    assert observed(M.LAUNCHING, "error") is M.FAILED
    assert observed(M.LAUNCHING, "failed") is M.NOT_LAUNCHED
    assert observed(M.RUNNING, "terminated") is M.TERMINATED
    assert observed(M.RUNNING, "stopped") is M.RUNNING
    # Asked to end: it ends, whatever else is seen on the way.
    assert observed(M.TERMINATING, "running") is M.TERMINATING
    assert observed(M.TERMINATING, "error") is M.TERMINATING
    assert observed(M.TERMINATING, "failed") is M.TERMINATED
    # Final states stay: a late event cannot bring a member back.
    for final in (M.TERMINATED, M.CANCELLED, M.NOT_LAUNCHED, M.DENIED):
        assert observed(final, "running") is final
        assert observed(final, "failed") is final
