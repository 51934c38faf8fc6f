"""Events as RFC 5424 syslog messages, over UDP, TCP (RFC 6587 octet counting) or a unix socket.

    <134>1 2026-11-25T07:32:23.146027Z host boreas - instance.state_changed
        [boreas@32473 event_id="…" type="boreas.instance.state_changed.v1" subject="…"
         owner="alice"] instance 4dc6… pending -> running

Facility local0; severity notice for failures and rejections, info otherwise. The enterprise
number 32473 is the one RFC 5612 reserves for documentation: replace it with your own if you
have one (``SD_ID``).
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from shared.events import Envelope

FACILITY_LOCAL0 = 16
INFO, NOTICE = 6, 5
SD_ID = "boreas@32473"
_NOTICE_TOPICS = {"instance.failed", "instance.rejected"}


def _sd_value(value: object) -> str:
    # RFC 5424 §6.3.3: escape '"', '\' and ']' inside PARAM-VALUE.
    text = str(value)
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _summary(envelope: Envelope) -> str:
    data = envelope.data
    subject = envelope.subject or data.get("owner", "")
    if envelope.topic == "instance.state_changed":
        return f"instance {subject} {data.get('old_state')} -> {data.get('new_state')}"
    if "reason" in data:
        return f"{envelope.topic} {subject}: {data['reason']}"
    return f"{envelope.topic} {subject}".strip()


def format_rfc5424(envelope: Envelope, hostname: str, app: str = "boreas") -> bytes:
    severity = NOTICE if envelope.topic in _NOTICE_TOPICS else INFO
    params = {
        "event_id": envelope.id,
        "type": envelope.type,
        "source": envelope.source,
    }
    if envelope.subject:
        params["subject"] = envelope.subject
    if "owner" in envelope.data:
        params["owner"] = envelope.data["owner"]
    structured = "[" + SD_ID + "".join(f' {k}="{_sd_value(v)}"' for k, v in params.items()) + "]"
    timestamp = envelope.time.isoformat().replace("+00:00", "Z")
    msgid = envelope.topic[:32]
    line = (
        f"<{FACILITY_LOCAL0 * 8 + severity}>1 {timestamp} {hostname[:255] or '-'} {app} - "
        f"{msgid} {structured} {_summary(envelope)}"
    )
    return line.encode("utf-8")


@dataclass
class SyslogSender:
    """Sends formatted messages to ``udp://host:port``, ``tcp://host:port`` or ``unix:///path``."""

    url: str

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("udp", "tcp", "unix"):
            raise ValueError(f"syslog URL must be udp://, tcp:// or unix://, not {self.url!r}")
        self._parts = parts
        self._writer: asyncio.StreamWriter | None = None

    async def send(self, message: bytes) -> None:
        scheme = self._parts.scheme
        if scheme == "udp":
            await asyncio.to_thread(self._send_datagram, socket.AF_INET, message)
        elif scheme == "unix":
            await asyncio.to_thread(self._send_datagram, socket.AF_UNIX, message)
        else:
            await self._send_stream(message)

    def _send_datagram(self, family: int, message: bytes) -> None:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            target = (
                self._parts.path
                if family == socket.AF_UNIX
                else (self._parts.hostname, self._parts.port or 514)
            )
            sock.sendto(message, target)

    async def _send_stream(self, message: bytes) -> None:
        for attempt in (1, 2):  # one reconnect: the collector may have dropped an idle stream
            try:
                if self._writer is None or self._writer.is_closing():
                    _, self._writer = await asyncio.open_connection(
                        self._parts.hostname, self._parts.port or 601
                    )
                self._writer.write(f"{len(message)} ".encode() + message)  # RFC 6587 framing
                await self._writer.drain()
                return
            except OSError:
                self._writer = None
                if attempt == 2:
                    raise
