"""Whether RabbitMQ and PostgreSQL answer: for start-up scripts and test set-up, not services."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import asyncpg


def maintenance_url(database_url: str) -> str:
    """The same server's ``postgres`` database, which exists before Boreas' own does."""
    return urlunsplit(urlsplit(database_url)._replace(path="/postgres"))


async def unreachable(amqp_url: str, database_url: str, timeout: float = 5.0) -> list[str]:
    """Names (with the reason) of whichever of the two does not answer; empty when both do."""
    missing = []
    try:
        connection = await asyncio.wait_for(aio_pika.connect(amqp_url), timeout)
        await connection.close()
    except Exception as exc:
        missing.append(f"RabbitMQ ({exc.__class__.__name__})")
    try:
        conn = await asyncio.wait_for(asyncpg.connect(maintenance_url(database_url)), timeout)
        await conn.close()
    except Exception as exc:
        missing.append(f"PostgreSQL ({exc.__class__.__name__})")
    return missing
