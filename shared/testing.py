"""Tools for tests and external developers: watch ``boreas.events`` and wait for what you expect.

:class:`EventProbe` binds its own exclusive queue to the exchange (pattern ``#`` by default) and
records every envelope; :meth:`EventProbe.wait_for` returns as soon as a matching event has
arrived — waiting on the event itself, never on a fixed sleep.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from shared.bus import EXCHANGES
from shared.events import Envelope, parse_envelope


class EventProbe:
    """Every event matching ``pattern``, public and internal alike (or those of one exchange)."""

    def __init__(
        self, amqp_url: str, *, pattern: str = "#", exchanges: tuple[str, ...] = EXCHANGES
    ) -> None:
        self._url = amqp_url
        self._pattern = pattern
        self._exchanges = exchanges
        self.received: list[Envelope] = []
        self.bodies: list[bytes] = []  # every message body as it arrived, parsable or not
        self._arrived = asyncio.Condition()
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None

    async def __aenter__(self) -> EventProbe:
        self._connection = await aio_pika.connect_robust(self._url)
        channel = await self._connection.channel()
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        for name in self._exchanges:
            exchange = await channel.declare_exchange(name, "topic", durable=True)
            await queue.bind(exchange, routing_key=self._pattern)
        await queue.consume(self._on_message, no_ack=True)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._connection is not None:
            await self._connection.close()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        self.bodies.append(message.body)
        try:
            envelope = parse_envelope(message.body)
        except Exception:
            return  # a probe watches Boreas events; foreign bytes are someone else's test
        async with self._arrived:
            self.received.append(envelope)
            self._arrived.notify_all()

    def matching(
        self, topic: str, predicate: Callable[[Envelope], bool] = lambda _e: True
    ) -> list[Envelope]:
        return [e for e in self.received if e.topic == topic and predicate(e)]

    async def wait_for(
        self,
        topic: str,
        predicate: Callable[[Envelope], bool] = lambda _e: True,
        *,
        count: int = 1,
        timeout: float = 5.0,
    ) -> list[Envelope]:
        """The first ``count`` events on ``topic`` matching ``predicate``, or TimeoutError."""
        async with asyncio.timeout(timeout), self._arrived:
            await self._arrived.wait_for(lambda: len(self.matching(topic, predicate)) >= count)
            return self.matching(topic, predicate)[:count]


async def wait_until(
    condition: Callable[[], Any], *, timeout: float = 10.0, interval: float = 0.05, what: str = ""
) -> Any:
    """Poll ``condition`` (sync or async) until it returns something truthy; TimeoutError if not.

    For state that emits no event of its own (a port that opens, a broker that comes back).
    """
    try:
        async with asyncio.timeout(timeout):
            while True:
                result = condition()
                if asyncio.iscoroutine(result):
                    result = await result
                if result:
                    return result
                await asyncio.sleep(interval)
    except TimeoutError:
        raise TimeoutError(f"not true after {timeout} s: {what or condition}") from None


def poll_until(
    condition: Callable[[], Any], *, timeout: float = 30.0, interval: float = 0.05, what: str = ""
) -> Any:
    """Blocking twin of :func:`wait_until`, for fixtures that start a process and must wait
    for its port to answer (a port that opens emits no event to wait on)."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"not true after {timeout} s: {what or condition}")
        time.sleep(interval)
