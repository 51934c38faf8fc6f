"""Query strings out of URLs that reach logs, audit entries and events.

A webhook URL may carry a token in its query (``?token=…``): the owner sees it through the API,
nobody else should, in a log line or an audit detail.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

REDACTED = "redacted"
# A URL inside free text (an error message, a log line): scheme, then anything up to a space or
# a quote; only its query (and fragment) is cut.
_URL_IN_TEXT = re.compile(
    r"""([a-zA-Z][a-zA-Z0-9+.-]*://[^\s?#"'<>]*)\?[^\s#"'<>]*(#[^\s"'<>]*)?"""
)


def redact_url(url: str) -> str:
    """``url`` with its query string replaced: ``https://h/p?token=x`` → ``https://h/p?redacted``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_urls_in(url)
    if not parts.query and not parts.fragment:
        return url
    return urlunsplit(parts._replace(query=REDACTED if parts.query else "", fragment=""))


def redact_urls_in(text: str) -> str:
    """Every URL in ``text`` with its query string replaced."""
    if "://" not in text:
        return text
    return _URL_IN_TEXT.sub(lambda m: f"{m.group(1)}?{REDACTED}", text)


def redact_values_in(text: str, secrets: Iterable[str]) -> str:
    """``text`` with each of ``secrets`` (of 4 characters or more) replaced, and every URL's
    query cut: for error messages that may repeat what they were sent."""
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= 4:
            text = text.replace(secret, REDACTED)
    return redact_urls_in(text)
