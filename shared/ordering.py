"""Ordering keys: which messages must be handled in order, and how the bus keeps them together.

A subscription names the key its handler needs order on (:class:`OrderKey`): the instance for
instance events, the owner for quota decisions, the account for account events. Messages with
the same key value are handled one after the other; messages with different values may be
handled at the same time.

Across replicas, order holds because every message of one key value lands in the same
partition queue, and a partition queue has one active consumer at a time. The publisher stamps
each message with one header per key kind whose *name* carries the key's slot (for example
``boreas-slot-owner-17``); a partition's queue is bound to its subscription's headers exchange
with ``x-match: any`` over the slots it owns. The slot is a CRC-32 of the key value, so the
mapping survives broker restarts and needs no plugin.
"""

from __future__ import annotations

import enum
import zlib
from collections.abc import Mapping
from typing import Any

SLOTS = 64
HEADER_PREFIX = "boreas-slot-"


class OrderKey(enum.StrEnum):
    INSTANCE = "instance"  # the instance id (the CloudEvent subject); else the owner
    OWNER = "owner"
    ACCOUNT = "account"


def key_value(key: OrderKey, data: Mapping[str, Any], subject: str | None) -> str | None:
    """The value of ``key`` for an event, or None when the event carries none."""
    if key is OrderKey.INSTANCE:
        value = data.get("instance_id") or subject or data.get("owner")
    elif key is OrderKey.OWNER:
        value = data.get("owner")
    else:
        value = data.get("account_id")
    return None if value is None else str(value)


def slot_of(value: str) -> int:
    return zlib.crc32(value.encode()) % SLOTS


def slot_header(key: OrderKey, slot: int) -> str:
    return f"{HEADER_PREFIX}{key.value}-{slot}"


def slot_headers(data: Mapping[str, Any], subject: str | None, fallback: str) -> dict[str, str]:
    """One header per key kind, for the publisher. An event without a value for a key is
    spread by ``fallback`` (its event id): it has no order to keep on that key."""
    return {
        slot_header(key, slot_of(key_value(key, data, subject) or fallback)): "1"
        for key in OrderKey
    }


def partition_binding(key: OrderKey, partition: int, partitions: int) -> dict[str, str]:
    """Binding arguments of one partition queue: every slot whose number it owns."""
    if not 1 <= partitions <= SLOTS or not 0 <= partition < partitions:
        raise ValueError(f"partition {partition} of {partitions} (1 to {SLOTS} partitions)")
    return {
        "x-match": "any",
        **{slot_header(key, s): "1" for s in range(SLOTS) if s % partitions == partition},
    }


def partition_of(key: OrderKey, value: str, partitions: int) -> int:
    return slot_of(value) % partitions
