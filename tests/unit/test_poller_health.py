"""When the poller reports an account's health, and how it names a failure. No I/O."""

from datetime import UTC, datetime, timedelta

import requests

from services.poller.health import HEALTH_REPORT_SECONDS, describe_failure, health_due

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def test_every_failed_poll_is_reported() -> None:
    assert health_due(failed=True, failures_before=0, reported_at=ago(1), now=NOW)
    assert health_due(failed=True, failures_before=7, reported_at=ago(1), now=NOW)


def test_the_first_success_after_failures_is_reported_at_once() -> None:
    assert health_due(failed=False, failures_before=1, reported_at=ago(1), now=NOW)


def test_an_account_never_reported_is_reported_on_its_first_success() -> None:
    assert health_due(failed=False, failures_before=0, reported_at=None, now=NOW)


def test_successes_are_reported_at_most_every_interval() -> None:
    every = HEALTH_REPORT_SECONDS
    assert not health_due(failed=False, failures_before=0, reported_at=ago(1), now=NOW)
    assert not health_due(failed=False, failures_before=0, reported_at=ago(every - 1), now=NOW)
    assert health_due(failed=False, failures_before=0, reported_at=ago(every), now=NOW)
    assert health_due(failed=False, failures_before=0, reported_at=ago(5), now=NOW, every=5)


def test_a_failure_is_named_by_its_type_and_message() -> None:
    assert describe_failure(TimeoutError("the cloud did not answer")) == (
        "TimeoutError: the cloud did not answer"
    )
    assert describe_failure(ConnectionResetError()) == "ConnectionResetError"


def test_query_strings_of_urls_and_paths_are_redacted() -> None:
    error = requests.exceptions.ConnectionError(
        "HTTPConnectionPool(host='10.0.0.9', port=80): Max retries exceeded with url: "
        "/v1/nodes?X-Amz-Signature=abc (Caused by NewConnectionError('refused'))"
    )
    assert describe_failure(error) == (
        "ConnectionError: HTTPConnectionPool(host='10.0.0.9', port=80): Max retries exceeded "
        "with url: /v1/nodes?redacted (Caused by NewConnectionError('refused'))"
    )
    assert describe_failure(ValueError("see https://x.example/a?token=t1 now")) == (
        "ValueError: see https://x.example/a?redacted now"
    )


def test_credential_values_are_redacted_wherever_they_appear() -> None:
    error = PermissionError("key AKIAEXAMPLE1 with secret s3cr3t-s3cr3t-value refused")
    assert describe_failure(error, secrets=["AKIAEXAMPLE1", "s3cr3t-s3cr3t-value", "ab"]) == (
        "PermissionError: key redacted with secret redacted refused"
    )


def test_a_long_message_is_cut_after_redaction() -> None:
    secret = "x" * 40
    text = describe_failure(RuntimeError("a" * 290 + secret), secrets=[secret])
    assert secret[:10] not in text
    assert len(text) <= 320
