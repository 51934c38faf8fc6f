"""The probe listener of a worker service: ``/metrics``, ``/healthz`` and ``/readyz`` over HTTP.

The gateway answers these on its own port. The other services have no HTTP server, so their
runtime starts this small one on ``BOREAS_PROBE_HOST``:``BOREAS_PROBE_PORT`` before it connects
to anything: while a service still waits for RabbitMQ or PostgreSQL it is alive, not ready.
``GET`` and ``HEAD`` only, one request per connection, the request head read within 5 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Mapping

from shared.metrics import exposition

REQUEST_TIMEOUT = 5.0
HEAD_LIMIT = 8192  # bytes of request line and headers; probes and scrapers send a few hundred

Answer = tuple[int, str, bytes]  # status, content type, body
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}


def _json(status: int, body: Mapping[str, object]) -> Answer:
    return status, "application/json", json.dumps(body).encode()


async def start_probe_server(
    host: str,
    port: int,
    *,
    alive: Callable[[], Mapping[str, object]],
    ready: Callable[[], Awaitable[Mapping[str, bool]]],
) -> asyncio.Server:
    """Listen on ``host``:``port`` (0: any free port; the server's socket says which).

    ``alive()`` says whether the process is alive (its ``alive`` item) and why not; ``ready()``
    names each dependency and whether it is reachable: 200 when all are, else 503."""

    async def answer(path: str) -> Answer:
        if path == "/metrics":
            body, content_type = exposition()
            return 200, content_type, body
        if path == "/healthz":
            state = alive()
            return _json(200 if state.get("alive") else 503, state)
        if path == "/readyz":
            state = await ready()
            return _json(200 if all(state.values()) else 503, state)
        return _json(404, {"detail": f"no {path} here: /metrics, /healthz, /readyz"})

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    head = await reader.readuntil(b"\r\n\r\n")
            except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                return
            method, path = _request_line(head)
            if method is None:
                status, content_type, body = _json(400, {"detail": "not an HTTP request"})
            elif method not in ("GET", "HEAD"):
                status, content_type, body = _json(405, {"detail": "GET or HEAD only"})
            else:
                status, content_type, body = await answer(path)
            lines = [
                f"HTTP/1.1 {status} {_REASONS[status]}",
                f"Content-Type: {content_type}",
                f"Content-Length: {len(body)}",
                "Connection: close",
                *(["Allow: GET, HEAD"] if status == 405 else []),
            ]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            if method != "HEAD":
                writer.write(body)
            await writer.drain()
        except ConnectionError:
            pass  # the client left
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    return await asyncio.start_server(handle, host, port, limit=HEAD_LIMIT)


def _request_line(head: bytes) -> tuple[str | None, str]:
    """The method and the path (query string dropped) of a request head."""
    parts = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return None, ""
    return parts[0], parts[1].split("?", 1)[0]
