"""What the benchmarks share: setting a stack up through its API, and driving HTTP load with wrk
(maximum rates) or with the rate-controlled generator of :mod:`tests.bench.loadgen`."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.processes import ROOT
from tests.system import ADMIN_PASSWORD, System, add_simulator_accounts, login, new_user

LAUNCH_BODY = {"name": "bench", "image": "debian-12", "cpus": 1, "memory_mb": 512}


@dataclass(frozen=True)
class Setup:
    admin: dict[str, str]
    tokens: list[str]  # one per user
    accounts: list[str]  # account ids


async def prepare(
    system: System,
    *,
    users: int = 10,
    accounts: int = 4,
    simulator: dict | None = None,
    poll_interval: float = 1.0,
) -> Setup:
    """Users with tokens, and simulated-cloud accounts granted to everyone, through the API."""
    async with httpx.AsyncClient(base_url=system.gateway_url, timeout=30) as client:
        admin = await login(client, "admin", ADMIN_PASSWORD)
        tokens = []
        for n in range(users):
            name, password = f"bench-{n}-{uuid.uuid4().hex[:6]}", f"bench-password-{n}"
            tokens.append((await new_user(client, admin, name, password))["Authorization"])
        account_ids = await add_simulator_accounts(
            client,
            admin,
            system,
            accounts,
            simulator={"timings": {"boot": 0}, **(simulator or {})},
            poll_interval=poll_interval,
        )
        return Setup(admin, tokens, account_ids)


def launch_requests(setup: Setup, placement: dict | None = None) -> list[dict]:
    """One launch request per user, for generators to send round robin."""
    body = json.dumps({**LAUNCH_BODY, "placement": placement or {}})
    return [
        {
            "headers": {"Authorization": token, "Content-Type": "application/json"},
            "body": body,
        }
        for token in setup.tokens
    ]


async def loadgen(plan: dict) -> dict:
    """Run :mod:`tests.bench.loadgen` in a process of its own; its JSON summary."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as file:
        json.dump(plan, file)
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.bench.loadgen",
            file.name,
            cwd=ROOT,
            stdout=subprocess.PIPE,
        )
        out, _ = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"load generator failed ({process.returncode})")
        return json.loads(out)
    finally:
        os.unlink(file.name)


WRK_SCRIPT = """
local requests = {}
local n = 0
%s
request = function()
  n = n + 1
  return requests[(n %% #requests) + 1]
end
"""


def ensure_wrk() -> str:
    """wrk, from Debian's packages: installed on first use where apt-get may run."""
    found = shutil.which("wrk")
    if found:
        return found
    if shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True, capture_output=True)
        found = shutil.which("wrk")
    if not found:
        raise RuntimeError("make bench needs wrk: sudo apt-get install wrk (Debian, Ubuntu)")
    return found


def wrk(
    url: str,
    *,
    seconds: int,
    connections: int,
    threads: int = 2,
    method: str = "GET",
    requests: list[dict] | None = None,
) -> dict:
    """Drive ``url`` as fast as wrk can for ``seconds``; requests/s, 2xx answers/s, latency."""
    command = [ensure_wrk(), "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s"]
    command += ["--latency", url]
    script = None
    if requests:
        lines = [_wrk_request(method, r) for r in requests]
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as file:
            file.write(WRK_SCRIPT % "\n".join(lines))
        script = file.name
        command += ["-s", script]
    try:
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    finally:
        if script:
            os.unlink(script)
    total = int(re.search(r"(\d+) requests in", output).group(1))
    failed = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: (.*)", output)
    elapsed = seconds
    return {
        "requests": total,
        "per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "ok_per_s": (total - (int(failed.group(1)) if failed else 0)) / elapsed,
        "not_2xx": int(failed.group(1)) if failed else 0,
        "socket_errors": errors.group(1) if errors else "",
        "latency_p50_ms": _ms(re.search(r"50%\s+([\d.]+\w+)", output).group(1)),
        "latency_p99_ms": _ms(re.search(r"99%\s+([\d.]+\w+)", output).group(1)),
    }


def _wrk_request(method: str, request: dict) -> str:
    headers = ", ".join(f"[{_lua(k)}] = {_lua(v)}" for k, v in request["headers"].items())
    body = _lua(request.get("body", ""))
    return f"requests[#requests + 1] = wrk.format({_lua(method)}, nil, {{{headers}}}, {body})"


def _lua(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _ms(text: str) -> float:
    number, unit = re.match(r"([\d.]+)(\w+)", text).groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def logs_dir(name: str) -> Path:
    path = ROOT / ".bench" / "logs" / name
    path.mkdir(parents=True, exist_ok=True)
    return path
