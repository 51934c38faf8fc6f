"""Opaque cursors for keyset pagination: the sort key of the last item, base64url-encoded JSON.

A cursor this API did not give out raises :class:`BadCursor`, which the gateway answers with 400.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import Query

Row = TypeVar("Row")


# The query parameter every listing takes.
CursorParam = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=512,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="next_cursor of the previous page",
    ),
]


class BadCursor(ValueError):
    pass


def encode_cursor(*key: Any) -> str:
    raw = json.dumps([str(part) for part in key], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None, *parsers: Callable[[str], Any]) -> tuple[Any, ...] | None:
    """The key encoded in ``cursor``, each part passed through its parser; None for no cursor."""
    if cursor is None:
        return None
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(key, list) or len(key) != len(parsers):
            raise ValueError("wrong shape")
        return tuple(parse(str(part)) for parse, part in zip(parsers, key, strict=True))
    except (binascii.Error, ValueError, TypeError) as exc:
        raise BadCursor("The cursor is not one this API gave out.") from exc


def split_page(
    rows: list[Row], limit: int, key: Callable[[Row], tuple[Any, ...]]
) -> tuple[list[Row], str | None]:
    """Rows fetched with ``limit + 1``: the page itself, and the cursor of the next one if any."""
    if len(rows) <= limit:
        return rows, None
    page = rows[:limit]
    return page, encode_cursor(*key(page[-1]))
