"""Query strings (a webhook's token) never reach a log line, an audit entry or an event."""

import logging
from collections.abc import Iterator

import pytest
import structlog

from shared.logging import configure_logging
from shared.redaction import redact_url, redact_urls_in, redact_values_in


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hooks.example/in?token=s3cr3t", "https://hooks.example/in?redacted"),
        ("http://127.0.0.1:9000/hook?a=1&b=2#frag", "http://127.0.0.1:9000/hook?redacted"),
        ("https://hooks.example/in", "https://hooks.example/in"),
        ("https://hooks.example/in#only-a-fragment", "https://hooks.example/in"),
    ],
)
def test_a_url_loses_its_query(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_urls_inside_text_lose_their_query_and_the_rest_stays() -> None:
    text = 'ConnectError: POST "http://10.0.0.1:9/hook?token=abc" failed; see https://x.example/y'
    assert redact_urls_in(text) == (
        'ConnectError: POST "http://10.0.0.1:9/hook?redacted" failed; see https://x.example/y'
    )
    assert redact_urls_in("no url here ?token=abc") == "no url here ?token=abc"


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """configure_logging changes process-wide state: put it back for the tests that follow."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    quiet = {name: logging.getLogger(name).level for name in ("httpx", "httpcore")}
    config = structlog.get_config()
    yield
    root.handlers[:], root.level = handlers, level
    for name, was in quiet.items():
        logging.getLogger(name).setLevel(was)
    structlog.configure(**config)


@pytest.mark.usefixtures("restored_logging")
def test_log_lines_carry_no_query_and_httpx_keeps_quiet(capsys: pytest.CaptureFixture) -> None:
    configure_logging("notifier", "INFO", json=True)
    secret_url = "https://hooks.example/in?token=s3cr3t"
    structlog.get_logger("test").info("delivered", url=secret_url)
    logging.getLogger("httpx").info(f'HTTP Request: POST {secret_url} "200"')
    logging.getLogger("somelib").warning(f"calling {secret_url}")
    err = capsys.readouterr().err
    assert "s3cr3t" not in err
    assert err.count("https://hooks.example/in?redacted") == 2  # ours and somelib's; not httpx's


def test_a_clouds_error_message_loses_the_credentials_it_repeats() -> None:
    message = (
        "InvalidCredsError: key AKIA-42 with secret wJalr-long/secret refused "
        "(see https://cloud.example/auth?sig=wJalr-long/secret)"
    )
    shown = redact_values_in(message, ["wJalr-long/secret", "AKIA-42", "abc"])
    assert "wJalr" not in shown and "AKIA-42" not in shown
    assert shown.startswith("InvalidCredsError: key redacted with secret redacted refused")
    assert redact_values_in("abc is fine", ["abc"]) == "abc is fine", "too short to redact"
