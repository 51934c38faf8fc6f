"""SIGTERM: stop taking messages, finish the message in hand, exit within 10 s, lose nothing."""

from __future__ import annotations

import asyncio
import signal
import sys
import textwrap
from pathlib import Path

import asyncpg

from shared.bus import Bus
from shared.ordering import OrderKey, partition_of
from shared.testing import wait_until
from tests.integration.support import rejection, settings_for

SLOW_SERVICE = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from shared.consumer import Subscription
    from shared.ordering import OrderKey
    from shared.events import InstanceRejected
    from shared.logging import configure_logging
    from shared.runtime import run_until_signalled
    from tests.integration.support import settings_for, throwaway_runtime

    amqp_url, database_url, schema, started_flag, release_flag = sys.argv[1:]
    POLL = 0.02

    async def slow(event, uow):
        Path(started_flag).write_text(event.reason)
        while not Path(release_flag).exists():  # the test lets go only after sending SIGTERM
            await asyncio.sleep(POLL)
        await uow.conn.execute("INSERT INTO effects VALUES ($1, $2)", uow.envelope.id, event.reason)

    configure_logging(schema, json=True)
    runtime = throwaway_runtime(
        schema, settings_for(amqp_url, database_url, prefetch=10),
        [Subscription(InstanceRejected, slow, name="slow", order_by=OrderKey.OWNER)],
    )
    asyncio.run(run_until_signalled(runtime))
    """
)


async def test_sigterm_finishes_the_message_in_hand_and_returns_the_rest(
    amqp_url: str, database_url: str, unique: str, tmp_path: Path
) -> None:
    schema, flag, release = f"sd_{unique}", tmp_path / "started", tmp_path / "release"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SLOW_SERVICE,
        amqp_url,
        database_url,
        schema,
        str(flag),
        str(release),
        stderr=asyncio.subprocess.PIPE,
    )
    bus = Bus(amqp_url, source="boreas/test")
    await bus.connect()
    try:
        in_hand, queued = rejection(f"in-hand-{unique}"), rejection(f"queued-{unique}")
        assert proc.stderr is not None
        await _read_until(proc.stderr, b"service_started")  # queue declared *and* bound
        await bus.publish(in_hand)
        await bus.publish(queued)
        await wait_until(flag.exists, timeout=30, what="handler started")

        # From SIGTERM to exit, bounded as the docstring says: a service that keeps consuming,
        # or hangs instead of exiting once its handler returns, fails with TimeoutError.
        async with asyncio.timeout(10):
            proc.send_signal(signal.SIGTERM)
            await _read_until(proc.stderr, b"service_stopping")
            release.touch()
            await proc.communicate()
        assert proc.returncode == 0

        conn = await asyncpg.connect(database_url, server_settings={"search_path": schema})
        try:
            notes = [r["note"] for r in await conn.fetch("SELECT note FROM effects")]
        finally:
            await conn.close()
        assert notes == [in_hand.reason], "the message in hand is finished; the queued one is not"

        channel = await bus.connection.channel()
        partitions = settings_for(amqp_url, database_url).partitions
        partition = partition_of(OrderKey.OWNER, queued.owner, partitions)
        queue = await channel.declare_queue(f"{schema}.slow.{partition}", passive=True)
        assert queue.declaration_result.message_count == 1, "the queued message went back"
    finally:
        if proc.returncode is None:
            proc.kill()
        await bus.close()


async def _read_until(stream: asyncio.StreamReader, marker: bytes) -> None:
    async with asyncio.timeout(30):
        while marker not in (line := await stream.readline()):
            assert line, f"process ended before logging {marker!r}"
