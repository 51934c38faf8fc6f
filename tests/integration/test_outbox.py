"""Publish after commit: an event leaves only with its committed state, and is never lost."""

from __future__ import annotations

import asyncio
import sys
import textwrap

import pytest

from shared.outbox import add_to_outbox
from shared.runtime import ServiceRuntime
from shared.testing import EventProbe, wait_until
from tests.integration.support import rejection, settings_for, throwaway_runtime


def outbox_empty(rt: ServiceRuntime):
    async def check() -> bool:
        return await rt.pool.fetchval("SELECT count(*) FROM outbox") == 0

    return check


async def test_committed_state_change_publishes_its_event(
    amqp_url: str, database_url: str, probe: EventProbe, unique: str
) -> None:
    async with throwaway_runtime(f"ob_{unique}", settings_for(amqp_url, database_url)) as rt:
        event = rejection(f"commit-{unique}")
        async with rt.pool.acquire() as conn, conn.transaction():
            await conn.execute("INSERT INTO effects VALUES ('x', $1)", event.reason)
            envelope = await add_to_outbox(conn, event, source=rt.bus.source)

        [seen] = await probe.wait_for("instance.rejected", lambda e: e.id == envelope.id)
        assert seen.data["reason"] == event.reason
        assert seen.source == f"boreas/ob_{unique}"
        await wait_until(outbox_empty(rt), what="outbox row deleted once confirmed")


async def test_rolled_back_transaction_publishes_nothing(
    amqp_url: str, database_url: str, probe: EventProbe, unique: str
) -> None:
    async with throwaway_runtime(f"ob_{unique}", settings_for(amqp_url, database_url)) as rt:
        doomed, after = rejection(f"doomed-{unique}"), rejection(f"after-{unique}")
        with pytest.raises(RuntimeError, match="handler blew up"):
            async with rt.pool.acquire() as conn, conn.transaction():
                await conn.execute("INSERT INTO effects VALUES ('x', $1)", doomed.reason)
                await add_to_outbox(conn, doomed, source=rt.bus.source)
                raise RuntimeError("handler blew up")
        async with rt.pool.acquire() as conn, conn.transaction():
            await add_to_outbox(conn, after, source=rt.bus.source)

        # The relay publishes in commit order, so once `after` is out, `doomed` would be too.
        await probe.wait_for("instance.rejected", lambda e: e.data["reason"] == after.reason)
        assert (
            probe.matching("instance.rejected", lambda e: e.data["reason"] == doomed.reason) == []
        )
        assert await rt.pool.fetchval("SELECT count(*) FROM effects") == 0


async def test_outbox_refuses_to_write_outside_a_transaction(
    amqp_url: str, database_url: str, unique: str
) -> None:
    async with throwaway_runtime(f"ob_{unique}", settings_for(amqp_url, database_url)) as rt:
        async with rt.pool.acquire() as conn:
            with pytest.raises(RuntimeError, match="inside the transaction"):
                await add_to_outbox(conn, rejection(), source=rt.bus.source)


CRASH_AFTER_COMMIT = textwrap.dedent(
    """
    import asyncio, os, sys
    from shared.outbox import add_to_outbox
    from tests.integration.support import rejection, settings_for, throwaway_runtime

    async def main(amqp_url, database_url, schema, reason):
        runtime = throwaway_runtime(schema, settings_for(amqp_url, database_url))
        await runtime.start()
        async with runtime.pool.acquire() as conn:
            # Stop this process's relay first, so nothing can publish before the crash.
            for task in runtime._tasks:
                task.cancel()
            async with conn.transaction():
                await conn.execute("INSERT INTO effects VALUES ('crash', $1)", reason)
                await add_to_outbox(conn, rejection(reason), source=runtime.bus.source)
        os._exit(9)  # dies after commit, before any publish

    asyncio.run(main(*sys.argv[1:]))
    """
)


async def test_event_committed_before_a_crash_is_published_after_restart(
    amqp_url: str, database_url: str, probe: EventProbe, unique: str
) -> None:
    schema, reason = f"ob_{unique}", f"crash-{unique}"
    crashed = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CRASH_AFTER_COMMIT, amqp_url, database_url, schema, reason
    )
    assert await crashed.wait() == 9
    assert probe.matching("instance.rejected", lambda e: e.data["reason"] == reason) == []

    async with throwaway_runtime(schema, settings_for(amqp_url, database_url)) as restarted:
        await probe.wait_for("instance.rejected", lambda e: e.data["reason"] == reason)
        await wait_until(outbox_empty(restarted), what="outbox row deleted once confirmed")
        assert await restarted.pool.fetchval("SELECT count(*) FROM effects") == 1


async def test_events_leave_in_commit_order(
    amqp_url: str, database_url: str, probe: EventProbe, unique: str
) -> None:
    async with throwaway_runtime(f"ob_{unique}", settings_for(amqp_url, database_url)) as rt:
        reasons = [f"{unique}-{i:03d}" for i in range(60)]
        for reason in reasons:
            async with rt.pool.acquire() as conn, conn.transaction():
                await add_to_outbox(conn, rejection(reason), source=rt.bus.source)

        mine = lambda e: e.data["reason"].startswith(unique)  # noqa: E731
        seen = await probe.wait_for("instance.rejected", mine, count=len(reasons))
        assert [e.data["reason"] for e in seen] == reasons
