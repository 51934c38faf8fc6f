"""The probe listener answers /metrics in Prometheus text, /healthz and /readyz as it is told,
and refuses what is not a probe; the runtime's liveness and readiness say what they should."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping

import pytest
from prometheus_client.parser import text_string_to_metric_families

from shared.config import ServiceSettings
from shared.metrics import LAUNCHES
from shared.probes import start_probe_server
from shared.runtime import ServiceRuntime


class State:
    def __init__(self) -> None:
        self.alive: dict[str, object] = {"alive": True}
        self.ready: dict[str, bool] = {"database": True, "bus": True}

    async def readiness(self) -> Mapping[str, bool]:
        return self.ready


@pytest.fixture
async def probes() -> AsyncIterator[tuple[State, int]]:
    state = State()
    server = await start_probe_server(
        "127.0.0.1", 0, alive=lambda: state.alive, ready=state.readiness
    )
    yield state, server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def ask(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (h.split(":", 1) for h in header_lines)}
    return int(status_line.split(" ")[1]), headers, body


def get(path: str, method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: probe\r\n\r\n".encode()


async def test_metrics_are_prometheus_text_and_move(probes: tuple[State, int]) -> None:
    _, port = probes

    async def placed() -> float:
        status, headers, body = await ask(port, get("/metrics"))
        assert status == 200
        assert headers["content-type"].startswith("text/plain; version=")
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        return next(
            (
                s.value
                for s in families["boreas_launches"].samples
                if s.name == "boreas_launches_total" and s.labels == {"outcome": "placed"}
            ),
            0.0,
        )

    before = await placed()
    LAUNCHES.labels("placed").inc()
    assert await placed() == before + 1


async def test_healthz_and_readyz_follow_the_state(probes: tuple[State, int]) -> None:
    state, port = probes
    assert (await ask(port, get("/healthz")))[0] == 200
    status, _, body = await ask(port, get("/readyz?verbose=1"))
    assert (status, json.loads(body)) == (200, {"database": True, "bus": True})

    state.ready = {"database": True, "bus": False}
    status, _, body = await ask(port, get("/readyz"))
    assert (status, json.loads(body)) == (503, {"database": True, "bus": False})

    state.alive = {"alive": False, "failing": ["polling"]}
    status, _, body = await ask(port, get("/healthz"))
    assert (status, json.loads(body)["failing"]) == (503, ["polling"])


async def test_head_has_no_body_and_the_rest_is_refused(probes: tuple[State, int]) -> None:
    _, port = probes
    status, headers, body = await ask(port, get("/healthz", "HEAD"))
    assert (status, body) == (200, b"")
    assert int(headers["content-length"]) > 0
    assert (await ask(port, get("/v1/status")))[0] == 404
    status, headers, _ = await ask(port, get("/metrics", "POST"))
    assert (status, headers["allow"]) == (405, "GET, HEAD")
    assert (await ask(port, b"hello\r\n\r\n"))[0] == 400


async def test_a_request_head_too_long_gets_no_answer(probes: tuple[State, int]) -> None:
    _, port = probes
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20_000 + b"\r\n\r\n")
    try:
        answer = await asyncio.wait_for(reader.read(), 5)
    except ConnectionResetError:  # closed with the rest of the head unread
        answer = b""
    assert answer == b""
    writer.close()


async def test_the_runtime_is_alive_until_a_loop_gives_up_and_ready_only_once_started() -> None:
    runtime = ServiceRuntime("unit", ServiceSettings(), [])
    assert runtime.liveness() == {"alive": True}
    assert await runtime.readiness() == {"database": False, "bus": False}
    runtime.failing.add("polling")
    runtime.fatal.set()
    assert runtime.liveness() == {"alive": False, "failing": ["polling"]}
