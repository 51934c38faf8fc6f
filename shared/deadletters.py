"""`python -m shared.deadletters list|replay <service>.<handler>`: inspect and replay dead letters.

``list`` shows what waits in ``<queue>.dead-letter`` (event id, type, why it died) and leaves it
there. ``replay`` puts each message back on ``boreas.events`` under its original routing key,
with publisher confirms, and only then removes it from the dead-letter queue; handlers are
idempotent on the event id, so replaying something already handled does nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from shared.config import DEFAULT_AMQP_URL
from shared.events import exchange_of


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
            seen.append(letter)
            if replay:
                exchange = await channel.get_exchange(exchange_of(letter.routing_key), ensure=False)
                await exchange.publish(
                    aio_pika.Message(
                        message.body,
                        content_type=message.content_type,
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        message_id=message.message_id,
                        type=message.type,
                        app_id=message.app_id,
                        correlation_id=message.correlation_id,
                    ),
                    routing_key=letter.routing_key,
                )
                await message.ack()
            else:
                held.append(message)
        for message in held:  # listing only: every message goes back where it was
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
