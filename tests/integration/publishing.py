"""A bus connection of a test's own, for publishing what a service that does not run in the test
would publish."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from shared.bus import Bus


@asynccontextmanager
async def connected_bus(amqp_url: str, source: str = "boreas/test") -> AsyncIterator[Bus]:
    """A connected bus whose events come from ``source``; closed on the way out."""
    bus = Bus(amqp_url, source=source)
    await bus.connect()
    try:
        yield bus
    finally:
        await bus.close()
