"""The boreas command's pure parts: problems into messages and exit codes, the event-stream
format, topic patterns, when a watch is over, how values and tables print, and durations."""

from __future__ import annotations

import pytest

from boreas_cli.durations import described, optional_seconds_of, seconds_of
from boreas_cli.errors import CliError, ExitCode, exit_code_for, problem_message
from boreas_cli.events import FrameParser
from boreas_cli.output import field, money, render_csv, render_table, table_text, text, when
from boreas_cli.watch import change_line, is_done, went_wrong
from shared.webhooks.topics import matches as topic_matches


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (401, ExitCode.NOT_LOGGED_IN),
        (403, ExitCode.NOT_FOUND),
        (404, ExitCode.NOT_FOUND),
        (409, ExitCode.CONFLICT),
        (400, ExitCode.FAILURE),
        (422, ExitCode.FAILURE),
        (429, ExitCode.FAILURE),
        (500, ExitCode.FAILURE),
        (503, ExitCode.FAILURE),
    ],
)
def test_each_status_has_its_exit_code(status: int, code: ExitCode) -> None:
    assert exit_code_for(status) is code


def test_a_problem_reads_as_its_title_and_detail() -> None:
    body = {"type": "about:blank", "title": "Not Found", "status": 404, "detail": "No such one."}
    assert problem_message(404, body, "Not Found") == "Not Found: No such one."


def test_a_401_says_how_to_log_in() -> None:
    body = {"title": "Unauthorized", "status": 401, "detail": "Token expired."}
    assert problem_message(401, body, "Unauthorized").splitlines() == [
        "Unauthorized: Token expired.",
        "Log in with `boreas login` (or set BOREAS_TOKEN).",
    ]


def test_every_invalid_field_gets_a_line() -> None:
    body = {
        "title": "Invalid request",
        "detail": "body.name: bad",
        "errors": [
            {"loc": ["body", "name"], "msg": "bad", "type": "x"},
            {"loc": ["body", "cpus"], "msg": "too small", "type": "y"},
        ],
    }
    assert problem_message(422, body, "Unprocessable Entity").splitlines() == [
        "Invalid request:",
        "  body.name: bad",
        "  body.cpus: too small",
    ]


def test_an_answer_that_is_no_problem_reads_as_its_status() -> None:
    assert problem_message(502, None, "Bad Gateway") == "502 Bad Gateway"


def test_frames_become_events_and_comments_are_skipped() -> None:
    parser = FrameParser()
    lines = [
        ": connected",
        "id: 7",
        "event: instance.state_changed",
        'data: {"subject": "i-1",',
        'data:  "data": {"new_state": "running"}}',
        "",
        ": keep-alive",
        "",
    ]
    events = [event for line in lines if (event := parser.feed(line)) is not None]
    assert len(events) == 1
    (event,) = events
    assert (event.id, event.topic, event.subject) == ("7", "instance.state_changed", "i-1")
    assert event.data == {"new_state": "running"}


@pytest.mark.parametrize(
    ("pattern", "topic", "matches"),
    [
        ("#", "instance.state_changed", True),
        ("instance.*", "instance.state_changed", True),
        ("instance.*", "quota.usage_changed", False),
        ("*", "instance.state_changed", False),
        ("instance.#", "instance", True),
        ("quota.#", "quota.usage_changed", True),
        ("instance.state_changed", "instance.state_changed", True),
        ("instance.state_*", "instance.state_changed", False),
        ("*.state_changed", "instance.state_changed", True),
    ],
)
def test_topic_patterns_match_as_amqp_bindings_do(pattern: str, topic: str, matches: bool) -> None:
    assert topic_matches(pattern, topic) is matches


@pytest.mark.parametrize(
    ("state", "target", "done", "wrong"),
    [
        ("requested", None, False, False),
        ("pending", None, False, False),
        ("running", None, True, False),
        ("rejected", None, True, True),
        ("error", None, True, True),
        ("running", frozenset({"stopped"}), False, True),
        ("stopped", frozenset({"stopped"}), True, False),
        ("error", frozenset({"stopped"}), True, True),
        ("rejected", frozenset({"terminated", "rejected"}), True, False),
    ],
)
def test_a_watch_ends_when_the_state_is_settled_or_the_one_asked_for(
    state: str, target: frozenset[str] | None, done: bool, wrong: bool
) -> None:
    assert is_done(state, target) is done
    assert went_wrong(state, target) is wrong


def test_values_print_for_people() -> None:
    assert [text(None), text(True), text(0.0123400), text(2), text(["a"])] == [
        "-",
        "yes",
        "0.01234",
        "2",
        '["a"]',
    ]
    assert when("2026-11-25T07:32:21.026020Z") == "2026-11-25 07:32:21Z"


def test_tables_are_aligned_whole_lines_without_trailing_spaces() -> None:
    items = [{"id": "a" * 40, "state": "running"}, {"id": "b", "state": None}]
    lines = table_text(render_table(items, [("ID", field("id")), ("STATE", field("state"))]))
    assert lines.splitlines() == [
        "ID" + " " * 40 + "STATE",
        "a" * 40 + "  running",
        "b" + " " * 41 + "-",
    ]


def test_csv_quotes_what_needs_it() -> None:
    assert render_csv([["alice", "a,b", 1.5]], ["owner", "account", "hours"]) == (
        'owner,account,hours\nalice,"a,b",1.5\n'
    )


@pytest.mark.parametrize(
    ("given", "seconds"),
    [("90s", 90), ("30m", 1800), ("2h", 7200), ("1d", 86400), ("1h30m", 5400), ("600", 600)],
)
def test_durations_read_as_seconds(given: str, seconds: int) -> None:
    assert seconds_of(given, "--lease") == seconds
    assert seconds_of(described(seconds), "--lease") == seconds  # and back


@pytest.mark.parametrize("given", ["", "2 weeks", "1.5h", "h", "-1h", "1y", "1h 30m"])
def test_what_is_no_duration_is_a_usage_error(given: str) -> None:
    with pytest.raises(CliError) as refused:
        seconds_of(given, "--lease")
    assert refused.value.code is ExitCode.USAGE
    assert refused.value.message.startswith("--lease: a duration such as 90s")


def test_no_duration_is_zero_unless_allowed_or_none_when_asked() -> None:
    with pytest.raises(CliError):
        seconds_of("0s", "--max")
    assert seconds_of("0", "--warn", zero=True) == 0
    assert [optional_seconds_of(v, "--max") for v in ("none", "Unlimited", "7d")] == [
        None,
        None,
        604800,
    ]
    assert [described(s) for s in (None, 0, 59, 3600, 604800, 90061)] == [
        "none", "0s", "59s", "1h", "7d", "1d1h1m1s",
    ]  # fmt: skip


def test_money_shows_cents_at_least() -> None:
    assert [money(v) for v in (9.6, 100, 0.0116, 0.4, None, 0.0)] == [
        "9.60", "100.00", "0.0116", "0.40", "-", "0.00",
    ]  # fmt: skip


def test_a_held_instance_says_which_rules_hold_it_and_until_when() -> None:
    held = {
        "id": "i-1",
        "name": "big-1",
        "state": "awaiting_approval",
        "updated_at": "2026-11-25T07:32:21Z",
        "approval_rules": ["big", "pricey"],
        "approval_deadline": "2026-11-26T07:32:21Z",
    }
    assert change_line(held, "requested") == (
        "2026-11-25 07:32:21Z  big-1  i-1  requested → awaiting_approval  (awaits an admin's "
        "approval (rules big, pricey), denied if unanswered by 2026-11-26 07:32:21Z: "
        "boreas instances approve|deny i-1)"
    )
    denied = held | {"state": "denied", "reason": "no answer within 1 day"}
    assert change_line(denied, "awaiting_approval").endswith(
        "awaiting_approval → denied  (no answer within 1 day)"
    )
    assert is_done("awaiting_approval", None) is False
    assert (is_done("denied", frozenset({"running"})), went_wrong("denied", None)) == (True, True)
