"""Request bodies above BOREAS_MAX_BODY_BYTES are refused with 413 before they are read."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.integration.api import ADMIN_PASSWORD, Api, gateway_settings, running_gateway

LIMIT = 4096


@pytest.fixture
async def small_api(amqp_url: str, database_url: str) -> AsyncIterator[Api]:
    settings = gateway_settings(amqp_url, database_url, max_body_bytes=LIMIT)
    async with running_gateway(settings) as api:
        yield api


def _assert_413(response: httpx.Response) -> None:
    assert response.status_code == 413, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert str(LIMIT) in response.json()["detail"]


async def test_a_body_declared_too_large_is_refused_unauthenticated(small_api: Api) -> None:
    body = json.dumps({"username": "admin", "password": "x" * (LIMIT + 1)}).encode()
    _assert_413(await small_api.client.post("/v1/tokens", content=body))


async def test_a_chunked_body_is_cut_off_at_the_limit(small_api: Api) -> None:
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'{"username": "admin", "password": "'
        for _ in range(1000):  # 1 MB offered, no Content-Length
            sent += 1
            yield b"x" * 1024
        yield b'"}'

    response = await small_api.client.post(
        "/v1/tokens", content=chunks(), headers={"Content-Type": "application/json"}
    )
    _assert_413(response)
    assert sent < 1000, "the gateway read the whole body"


async def test_a_body_within_the_limit_is_served(small_api: Api) -> None:
    response = await small_api.client.post(
        "/v1/tokens", json={"username": "admin", "password": ADMIN_PASSWORD}
    )
    assert response.status_code == 201


async def test_the_refusal_reads_nothing_when_the_length_is_declared(small_api: Api) -> None:
    """Straight through the ASGI interface: the application never asks for the body."""
    asked: list[str] = []
    sent: list[dict] = []

    async def receive() -> dict:
        asked.append("receive")
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/tokens",
        "raw_path": b"/v1/tokens",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"gateway"),
            (b"content-type", b"application/json"),
            (b"content-length", str(200 * 1024 * 1024).encode()),
        ],
        "client": ("127.0.0.1", 40000),
        "server": ("gateway", 80),
    }
    await small_api.app(scope, receive, send)
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 413
    assert asked == []
