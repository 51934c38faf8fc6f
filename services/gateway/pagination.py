"""Keyset pagination: each listing's pages are fetched with one more row than asked for, and an
opaque cursor, the sort key of a page's last row in base64url-encoded JSON, leads to the next.

A cursor this API did not give out raises :class:`BadCursor`, which the gateway answers with 400.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Query

from services.gateway.repository.identity import User
from services.gateway.schemas import NO_NUL

Row = TypeVar("Row")

# How many rows a page holds (logs, the audit log and delivery logs, take longer pages).
PageSize = Annotated[int, Query(ge=1, le=100)]
LogPageSize = Annotated[int, Query(ge=1, le=200)]

# A listing narrowed to one name: ``?owner=``, ``?actor=``, ``?message_id=``…
NameFilter = Annotated[str | None, Query(max_length=64, pattern=NO_NUL)]

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


@dataclass(frozen=True)
class Keyset(Generic[Row]):
    """The order of a listing as its cursors hold it: a row's key, and how to read back each of
    its parts."""

    key: Callable[[Row], tuple[Any, ...]]
    parsers: tuple[Callable[[str], Any], ...]


async def fetch_page(
    fetch: Callable[..., Awaitable[list[Row]]],
    keyset: Keyset[Row],
    *,
    limit: int,
    cursor: str | None,
) -> tuple[list[Row], str | None]:
    """A page of ``limit`` rows at most, from ``fetch(limit=…, after=…)``: the rows, and the
    cursor of the next page if there is one."""
    after = decode_cursor(cursor, *keyset.parsers)
    return split_page(await fetch(limit=limit + 1, after=after), limit, keyset.key)


# Things users own (instances, webhooks) by their creation, the newest first.
NEWEST_FIRST: Keyset[Any] = Keyset(
    lambda row: (row.created_at.isoformat(), row.id), (datetime.fromisoformat, uuid.UUID)
)


class OwnedPageQuery:
    """``?limit=``, ``?cursor=`` and ``?owner=`` of a listing of things users own (instances,
    webhooks): a FastAPI dependency, ``page: OwnedPage``."""

    def __init__(
        self, limit: PageSize = 50, cursor: CursorParam = None, owner: NameFilter = None
    ) -> None:
        self.limit, self.cursor, self.owner = limit, cursor, owner

    async def fetch(
        self, fetch: Callable[..., Awaitable[list[Row]]], user: User
    ) -> tuple[list[Row], str | None]:
        """The page, newest first: an admin's of the owner asked for (None: everyone's), a
        user's own (another's: none)."""
        owner = self.owner
        if not user.is_admin:
            if owner is not None and owner != user.username:
                return [], None
            owner = user.username
        return await fetch_page(
            partial(fetch, owner=owner), NEWEST_FIRST, limit=self.limit, cursor=self.cursor
        )


OwnedPage = Annotated[OwnedPageQuery, Depends()]
