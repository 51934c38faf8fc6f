"""Projections kept from events that carry a ``revision``: the newest revision wins.

A service keeps its own copy of what another announces (provider accounts, webhooks). Events of
one entity may arrive out of order (redelivery, replicas), so a row is replaced only by a higher
revision; an older one arriving late changes nothing. A deletion is kept as a row like any other
(a tombstone at its revision), so a late older revision cannot bring the entity back.
"""

from __future__ import annotations

from collections.abc import Sequence


def upsert_newest(table: str, columns: Sequence[str], *, key: str = "id") -> str:
    """SQL inserting a row of ``columns`` (bound as $1, $2, … in that order), or replacing the
    row kept under the same ``key`` only when the new one has a higher ``revision``. Run with
    ``execute``, its status ends in `` 1`` when the row was kept."""
    placeholders = ", ".join(f"${n}" for n in range(1, len(columns) + 1))
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c != key)
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders}) "
        f"ON CONFLICT ({key}) DO UPDATE SET {updates} "
        f"WHERE {table}.revision < EXCLUDED.revision"
    )
