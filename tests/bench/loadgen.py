"""A load generator in a process of its own: HTTP/1.1 keep-alive requests at a fixed rate (or as
fast as it can), written and parsed by hand so that it costs little next to what it measures.

    python -m tests.bench.loadgen PLAN.json

The plan: ``{"url": "http://127.0.0.1:8080/v1/instances", "method": "POST", "rate": 100,
"duration": 30, "connections": 16, "requests": [{"headers": {...}, "body": "..."}, ...]}``;
requests are sent round robin over ``requests``; ``rate`` 0 means as fast as the connections
allow. Requests are due one ``1 / rate`` after the other (open loop, within the limit of
``connections`` in flight). With ``"rate_file": path``, the rate is read from that file
(a number) four times a second, so whoever runs the generator can steer it. Prints one JSON
object: requests sent, answers by status, the rate achieved, latency percentiles, and how late
the generator was against its schedule.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import uvloop

RATE_CHECK = 0.25  # seconds between two reads of the rate file


@dataclass
class Outcome:
    statuses: Counter[int] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    lateness: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)


def _encode(method: str, host: str, path: str, headers: dict[str, str], body: str) -> bytes:
    payload = body.encode()
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(payload)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status


async def _connection(plan: dict, wire: list[bytes], schedule: _Schedule, outcome: Outcome) -> None:
    url = urlsplit(plan["url"])
    reader, writer = await asyncio.open_connection(url.hostname, url.port or 80)
    try:
        while (slot := schedule.next()) is not None:
            index, due = slot
            now = time.perf_counter()
            if due > now:
                await asyncio.sleep(due - now)
            began = time.perf_counter()
            outcome.lateness.append(max(0.0, began - due))
            writer.write(wire[index % len(wire)])
            try:
                status = await _read_response(reader)
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                outcome.errors[type(exc).__name__] += 1
                writer.close()
                reader, writer = await asyncio.open_connection(url.hostname, url.port or 80)
                continue
            outcome.latencies.append(time.perf_counter() - began)
            outcome.statuses[status] += 1
    finally:
        writer.close()


@dataclass
class _Schedule:
    rate: float
    duration: float
    started: float = field(default_factory=time.perf_counter)
    issued: int = 0
    _due: float = 0.0

    def next(self) -> tuple[int, float] | None:
        """The next request's index and due time, or None when the run is over."""
        now = time.perf_counter()
        if now - self.started >= self.duration:
            return None
        if self.rate:
            # After a pause (rate lowered, or the generator late), never make up a backlog.
            self._due = max(self._due + 1 / self.rate, now - 1 / self.rate)
        else:
            self._due = now
        index = self.issued
        self.issued += 1
        return index, self._due


def _read_rate(control: Path, current: float) -> float:
    """The rate written in ``control`` (a few bytes on a local disk), or ``current``."""
    try:
        return float(control.read_text().strip() or current)
    except (OSError, ValueError):
        return current


async def _follow_rate(schedule: _Schedule, path: str) -> None:
    while True:
        schedule.rate = _read_rate(Path(path), schedule.rate)
        await asyncio.sleep(RATE_CHECK)


def _percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def run(plan: dict) -> dict:
    url = urlsplit(plan["url"])
    host = f"{url.hostname}:{url.port}" if url.port else str(url.hostname)
    path = url.path + (f"?{url.query}" if url.query else "")
    requests = plan.get("requests") or [{}]
    wire = [
        _encode(plan.get("method", "GET"), host, path, r.get("headers", {}), r.get("body", ""))
        for r in requests
    ]
    outcome = Outcome()
    schedule = _Schedule(float(plan.get("rate", 0)), float(plan["duration"]))
    schedule._due = schedule.started
    steering = (
        asyncio.create_task(_follow_rate(schedule, plan["rate_file"]))
        if plan.get("rate_file")
        else None
    )
    began = time.perf_counter()
    await asyncio.gather(
        *(_connection(plan, wire, schedule, outcome) for _ in range(int(plan["connections"])))
    )
    elapsed = time.perf_counter() - began
    if steering is not None:
        steering.cancel()
    answered = sum(outcome.statuses.values())
    return {
        "sent": schedule.issued,
        "answered": answered,
        "statuses": {str(k): v for k, v in outcome.statuses.items()},
        "errors": dict(outcome.errors),
        "elapsed_s": elapsed,
        "per_s": answered / elapsed if elapsed else 0.0,
        "latency_p50_ms": _percentile(outcome.latencies, 0.5) * 1000,
        "latency_p99_ms": _percentile(outcome.latencies, 0.99) * 1000,
        "late_p99_ms": _percentile(outcome.lateness, 0.99) * 1000,
        "cpu_s": time.process_time(),
    }


def main() -> None:
    with open(sys.argv[1]) as file:
        plan = json.load(file)
    print(json.dumps(uvloop.run(run(plan))), flush=True)


if __name__ == "__main__":
    main()
