"""`python -m shared.deadletters list|replay <service>.<handler>`: inspect and replay dead letters.

``list`` shows what waits in ``<queue>.dead-letter`` (event id, type, why it died) and leaves it
there. ``replay`` publishes each event again, as the bus does (same body, properties and ordering
headers, so an ordered subscriber gets it in its key's partition), on its exchange under its
original routing key, with publisher confirms, and only then removes it from the dead-letter
queue; handlers are idempotent on the event id, so replaying something already handled does
nothing. A message that is not a Boreas CloudEvent at all stays where it is: any consumer would
dead-letter it again at once.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from dataclasses import dataclass
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import AbstractIncomingMessage

from shared.bus import to_amqp
from shared.config import DEFAULT_AMQP_URL
from shared.events import UndecodableEvent, exchange_of, parse_envelope

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class DeadLetter:
    event_id: str | None
    type: str | None
    routing_key: str
    reason: str


def _describe(message: AbstractIncomingMessage) -> DeadLetter:
    # RabbitMQ's own headers: x-death is a list of tables, the first about the first death.
    headers: dict[str, Any] = dict(message.headers or {})
    deaths = headers.get("x-death") or []
    first: dict[str, Any] = deaths[0] if deaths else {}
    routing_keys = first.get("routing-keys") or [message.routing_key or ""]
    return DeadLetter(
        event_id=message.message_id,
        type=message.type,
        routing_key=str(routing_keys[0]),
        reason=str(headers.get("x-first-death-reason") or first.get("reason") or "unknown"),
    )


async def _take_all(
    url: str, queue_name: str, *, replay: bool, limit: int | None
) -> list[DeadLetter]:
    connection = await aio_pika.connect(url)
    seen: list[DeadLetter] = []
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(f"{queue_name}.dead-letter", passive=True)
        held: list[AbstractIncomingMessage] = []
        while limit is None or len(seen) < limit:
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            letter = _describe(message)
            if not replay:
                seen.append(letter)
                held.append(message)
                continue
            try:
                envelope = parse_envelope(message.body)
            except UndecodableEvent as exc:
                log.warning("dead_letter_not_replayable", event_id=letter.event_id, error=str(exc))
                held.append(message)
                continue
            exchange = await channel.get_exchange(exchange_of(letter.routing_key), ensure=False)
            await exchange.publish(to_amqp(envelope), routing_key=letter.routing_key)
            await message.ack()
            seen.append(letter)
        for message in held:  # every message not replayed goes back where it was
            await message.nack(requeue=True)
    return seen


async def list_dead_letters(url: str, queue: str, limit: int | None = 100) -> list[DeadLetter]:
    return await _take_all(url, queue, replay=False, limit=limit)


async def replay_dead_letters(url: str, queue: str, limit: int | None = None) -> list[DeadLetter]:
    return await _take_all(url, queue, replay=True, limit=limit)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("action", choices=["list", "replay"])
    parser.add_argument("queue", help="the handler's queue, e.g. quota.decide_launch")
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()
    url = os.environ.get("BOREAS_AMQP_URL", DEFAULT_AMQP_URL)
    run = replay_dead_letters if args.action == "replay" else list_dead_letters
    letters = asyncio.run(run(url, args.queue, args.limit))
    for letter in letters:
        print(f"{letter.event_id}  {letter.type}  {letter.routing_key}  ({letter.reason})")
    verb = "replayed" if args.action == "replay" else "waiting"
    print(f"{len(letters)} dead letter(s) {verb} in {args.queue}.dead-letter")
    return 0


if __name__ == "__main__":
    sys.exit(main())
