"""The notifier's runtime, built one way for ``__main__`` and the tests."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx

from services.notifier.delivery import WebhookDeliverer
from services.notifier.handlers import SUBSCRIPTIONS, SYSLOG
from services.notifier.syslog import SyslogSender
from shared.config import NotifierSettings
from shared.db import service_migrations
from shared.runtime import Clock, Parts, ServiceRuntime, utcnow


def build(
    settings: NotifierSettings,
    *,
    clock: Clock = utcnow,
    transport: httpx.AsyncBaseTransport | None = None,
) -> ServiceRuntime:
    """``transport``: how webhook requests leave (tests count them); by default, the network."""
    cipher = settings.credential_cipher()
    syslog_url = settings.syslog_url

    def wire(rt: ServiceRuntime) -> Parts:
        deliverer = WebhookDeliverer(
            rt.pool, cipher, settings, rt.clock, transport=transport, on_commit=rt.outbox.wake
        )
        syslog = (
            {"sender": SyslogSender(syslog_url), "hostname": socket.gethostname()}
            if syslog_url
            else {}
        )
        return Parts(dependencies=syslog, loops={"webhook_delivery": deliverer.run})

    return ServiceRuntime(
        "notifier",
        settings,
        service_migrations(Path(__file__).parent),
        (*SUBSCRIPTIONS, SYSLOG) if syslog_url else SUBSCRIPTIONS,
        wire,
        clock=clock,
    )
