"""The poller's state differ, with no I/O."""

from services.poller.diff import Known, Seen, Transition, diff
from services.poller.polling import retry_delay


def known(instance: str, node: str, state: str) -> Known:
    return Known(instance, node, state)


def test_transitions_are_reported_once_per_change() -> None:
    result = diff(
        [known("i1", "n1", "pending"), known("i2", "n2", "running")],
        [Seen("n1", "i1", "running"), Seen("n2", "i2", "running")],
        {"n1": "i1", "n2": "i2"},
    )
    assert result.transitions == (Transition("i1", "n1", "pending", "running"),)
    assert result.unmanaged == ()


def test_a_vanished_instance_is_terminated() -> None:
    result = diff([known("i1", "n1", "running")], [], {"n1": "i1"})
    assert result.transitions == (Transition("i1", "n1", "running", "terminated"),)


def test_terminated_instances_stay_quiet() -> None:
    result = diff([known("i1", "n1", "terminated")], [], {"n1": "i1"})
    assert result.transitions == ()


def test_indefinite_provider_states_change_nothing() -> None:
    result = diff([known("i1", "n1", "running")], [Seen("n1", "i1", None)], {"n1": "i1"})
    assert result.transitions == ()


def test_nodes_created_outside_boreas_are_reported_not_adopted() -> None:
    result = diff(
        [known("i1", "n1", "running")],
        [Seen("n1", "i1", "running"), Seen("x9", None, "running"), Seen("x8", None, "terminated")],
        {"n1": "i1"},
    )
    assert result.unmanaged == ("x9",)
    assert result.transitions == ()


def test_a_boreas_node_not_yet_followed_is_not_unmanaged() -> None:
    result = diff([], [Seen("n5", "i5", "pending")], {})
    assert result.unmanaged == ()
    result = diff([], [Seen("n6", None, "pending")], {"n6": "i6"})
    assert result.unmanaged == ()


def test_backoff_doubles_with_jitter_up_to_a_ceiling() -> None:
    assert retry_delay(10, 1, 300, rand=lambda: 1.0) == 20
    assert retry_delay(10, 3, 300, rand=lambda: 1.0) == 80
    assert retry_delay(10, 3, 300, rand=lambda: 0.0) == 40
    assert retry_delay(10, 10, 300, rand=lambda: 1.0) == 300
