"""Nodes as the API shows them, rendered straight to JSON text.

A listing of 100,000 nodes is one pass over the rows and one string join: no dict per node, no
encoder walking them, the tags (jsonb, which PostgreSQL sends as JSON text) never decoded.
PostgreSQL formats the timestamps and works out the fake address (``NODE_COLUMNS``), which it
does faster than Python; Python works out each node's state now.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from json.encoder import encode_basestring_ascii as json_string  # json.dumps' own, in C
from typing import Any

from shared.clouds.simulator.model import AccountSettings, effective_state


def sql_isoformat(column: str) -> str:
    """SQL giving the text of Python's ``isoformat()`` for a UTC timestamp (no fraction when it
    is zero), so a computed ``since`` and a stored one read alike."""
    utc = f"({column} AT TIME ZONE 'UTC')"
    return (
        f"CASE WHEN date_trunc('second', {column}) = {column}"
        f""" THEN to_char({utc}, 'YYYY-MM-DD"T"HH24:MI:SS"+00:00"')"""
        f""" ELSE to_char({utc}, 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"') END"""
    )


# What SELECT and RETURNING name for the rows rendered here. The fake address is in TEST-NET-2
# (never routed) and a node keeps it: its last byte comes from the first byte of sha256(id).
NODE_COLUMNS = f"""id, name, state, since, size_id, image_id, region, tags,
    {sql_isoformat("since")} AS since_text, {sql_isoformat("created_at")} AS created_at_text,
    get_byte(sha256(convert_to(id, 'UTF8')), 0) % 254 + 1 AS address_byte"""

# States that change only by an API call (or a random death, checked apart).
_SETTLED = frozenset({"running", "stopped", "terminated", "error"})
_NO_ADDRESS = frozenset({"terminated", "error"})
_NODE = (
    '{"id":%s,"name":%s,"state":"%s","since":"%s","size":%s,"image":%s,"region":%s,'
    '"tags":%s,"created_at":"%s","public_ips":%s}'
)


def node_json(row: Mapping[str, Any], settings: AccountSettings, now: datetime) -> str:
    return nodes_json([row], settings, now, hide_expired=False)[1:-1]


def nodes_json(
    rows: Iterable[Mapping[str, Any]],
    settings: AccountSettings,
    now: datetime,
    *,
    hide_expired: bool = True,
) -> str:
    """A JSON array of the nodes at ``now``; terminated nodes older than the account's retention
    are left out (``hide_expired``)."""
    timings, deaths = settings.timings, settings.deaths_per_hour
    keep_after = now - timedelta(seconds=settings.terminated_retention)
    parts = []
    for row in rows:
        state, since, since_text = row["state"], row["since"], row["since_text"]
        if state not in _SETTLED or (deaths and state == "running"):
            stored_since = since
            state, since = effective_state(
                state, since, now, timings, node_id=row["id"], deaths_per_hour=deaths
            )
            if since != stored_since:
                since_text = since.isoformat()
        if state == "terminated" and hide_expired and since < keep_after:
            continue
        parts.append(
            _NODE
            % (
                json_string(row["id"]),
                json_string(row["name"]),
                state,
                since_text,
                json_string(row["size_id"]),
                json_string(row["image_id"]),
                json_string(row["region"]),
                row["tags"],
                row["created_at_text"],
                "[]" if state in _NO_ADDRESS else f'["198.51.100.{row["address_byte"]}"]',
            )
        )
    return "[" + ",".join(parts) + "]"
