"""A local webhook receiver that checks signatures on its own, and a notifier to feed it.

The receiver is a small HTTP/1.1 server on asyncio streams: it records every request, answers
with whatever status its ``answer`` function picks, and can be started late (the endpoint is down
until then) or stopped. ``verify`` is written from the Standard Webhooks text with hmac and
hashlib alone, independent of the code it checks.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from services.notifier import bootstrap as notifier
from shared.config import NotifierSettings
from shared.credentials import WEBHOOK, WEBHOOK_URL, CredentialCipher
from shared.events import SealedSecret, WebhookChanged, WebhookSecret
from shared.redaction import redact_url
from shared.runtime import ServiceRuntime
from shared.webhooks.signing import new_secret
from tests.integration.api import SESSION_KEY
from tests.integration.support import settings_for
from tests.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
TOLERANCE_SECONDS = 300


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """True when one of the request's signatures is the HMAC of it under ``secret``, and its
    timestamp is recent."""
    message_id, timestamp = headers["webhook-id"], headers["webhook-timestamp"]
    if abs(time.time() - int(timestamp)) > TOLERANCE_SECONDS:
        return False
    key = base64.b64decode(secret.split("_", 1)[1])
    signed = message_id.encode() + b"." + timestamp.encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    offered = [s[3:] for s in headers["webhook-signature"].split() if s.startswith("v1,")]
    return any(hmac.compare_digest(expected, o) for o in offered)


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int = 0  # what the receiver answered; 0 until it has

    @property
    def message_id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)


Answer = Callable[["Request"], Awaitable[int]]


async def ok(_request: Request) -> int:
    return 204


@dataclass
class Receiver:
    answer: Answer = ok
    port: int = field(default_factory=free_port)
    requests: list[Request] = field(default_factory=list)
    _server: asyncio.Server | None = None

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def at(self, path: str) -> list[Request]:
        """Requests that reached ``path`` and were answered 2xx, in order of arrival."""
        return [r for r in self.requests if r.path == path and 200 <= r.status < 300]

    def deduped(self, path: str) -> list[Request]:
        """What a receiver that dedupes on webhook-id processes: each message's first 2xx."""
        first: dict[str, Request] = {}
        for request in self.at(path):
            first.setdefault(request.message_id, request)
        return list(first.values())

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                _method, path, _version = lines[0].split(" ")
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in lines[1:] if line)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                request = Request(path, headers, body)
                self.requests.append(request)  # in order of arrival
                request.status = await self.answer(request)
                writer.write(f"HTTP/1.1 {request.status} X\r\ncontent-length: 0\r\n\r\n".encode())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def notifier_settings(amqp_url: str, database_url: str, **overrides: object) -> NotifierSettings:
    values: dict[str, object] = {
        "secret_key": SESSION_KEY,
        "webhook_timeout": 2.0,
        "webhook_retry_first": 0.2,
        "webhook_retry_max": 1.0,
        "webhook_retry_horizon": 300.0,
    }
    values.update(overrides)
    return settings_for(amqp_url, database_url, NotifierSettings, **values)


def notifier_runtime(
    settings: NotifierSettings, transport: httpx.AsyncBaseTransport | None = None
) -> ServiceRuntime:
    return notifier.build(settings, transport=transport)


class CountingTransport(httpx.AsyncBaseTransport):
    """The real transport, counting the requests that go through it."""

    def __init__(self) -> None:
        self.sent = 0
        self._real = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent += 1
        return await self._real.handle_async_request(request)

    async def aclose(self) -> None:
        await self._real.aclose()


async def notifier_knows(notifier: ServiceRuntime, webhook_id: str, revision: int = 1) -> bool:
    found = await notifier.pool.fetchval(
        "SELECT revision FROM webhooks WHERE id = $1", uuid.UUID(webhook_id)
    )
    return found is not None and found >= revision


def announced_webhook(
    webhook_id: uuid.UUID, owner: str, url: str, cipher: CredentialCipher
) -> WebhookChanged:
    """A ``webhook.changed`` as the gateway would announce a new webhook (a fresh secret)."""
    sealed = cipher.seal(str(webhook_id), {"secret": new_secret()}, purpose=WEBHOOK)
    return WebhookChanged(
        webhook_id=webhook_id,
        owner=owner,
        scope="own",
        url=redact_url(url),
        sealed_url=SealedSecret(
            **cipher.seal(str(webhook_id), {"url": url}, purpose=WEBHOOK_URL).model_dump()
        ),
        topics=["#"],
        secrets=[WebhookSecret(sealed=SealedSecret(**sealed.model_dump()))],
        active=True,
        revision=1,
    )
