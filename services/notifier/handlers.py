"""The notifier's handlers: every public event to the configured sinks."""

from __future__ import annotations

import functools
import socket

from services.notifier.syslog import SyslogSender, format_rfc5424
from shared.consumer import Subscription, UnitOfWork
from shared.events import PUBLIC


async def to_syslog(event: object, uow: UnitOfWork, *, sender: SyslogSender, hostname: str) -> None:
    # Raising (collector away) returns the message to the queue: nothing is lost, order is kept.
    await sender.send(format_rfc5424(uow.envelope, hostname))


def subscriptions(*, syslog_url: str | None) -> list[Subscription]:
    found: list[Subscription] = []
    if syslog_url:
        sender = SyslogSender(syslog_url)
        found.append(
            Subscription(
                PUBLIC,
                functools.partial(to_syslog, sender=sender, hostname=socket.gethostname()),
                name="to_syslog",
            )
        )
    return found
