"""`make bench`: Boreas' figures next to ceilings measured in the same run, on this machine.

Each part runs on a RabbitMQ vhost and a database of its own (removed afterwards), the services as
real processes where the figure is about them. Prints a table and writes the same figures to
``.bench/latest.json``; ``--only`` runs some parts (acceptance, launches, quota, polling, bus,
scale). docs/performance.md explains each figure, its ceiling and what the profiles showed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

# The services default to prod; the bench runs them (in process and as child processes, which
# inherit this) as a developer's stack on the guest broker account, as the tests do.
os.environ.setdefault("BOREAS_ENV", "dev")

from shared.logging import configure_logging
from tests.bench.bus import measure_bus
from tests.bench.harness import logs_dir
from tests.bench.launches import measure_acceptance, measure_launches
from tests.bench.polling import measure_polling
from tests.bench.quota import measure_quota
from tests.bench.scale import measure_scale
from tests.infra import provide_infrastructure
from tests.processes import ROOT

LATEST = ROOT / ".bench" / "latest.json"

# key → (target, "min" or "max"): what the figure must reach, or stay under.
TARGETS: dict[str, tuple[float, str]] = {
    "accept_per_s": (1000, "min"),
    "launch_per_s": (200, "min"),
    "launch_per_s_slow_cloud": (100, "min"),
    "launch_p99_ms": (1000 + 1000, "max"),  # 1,000 ms plus one poll interval (1 s here)
    "poll_cycle_s_100k": (10, "max"),
    "poll_cycle_cpu_cores": (1, "max"),
    "quota_per_s_hot": (1000, "min"),
    "quota_per_s_spread": (3000, "min"),
    "poll_idle_cpu_pct": (10, "max"),
    "rss_mb_max": (150, "max"),
}
# figure → the ceiling it is shown against (same run, same broker, database and server).
CEILINGS = {
    "accept_per_s": "ceiling_http_per_s",
    "launch_per_s": "ceiling_launch_per_s",
    "launch_per_s_slow_cloud": "ceiling_launch_per_s_slow_cloud",
    "event_p99_ms": "ceiling_event_p99_ms",
    "poll_cycle_s_100k": "ceiling_poll_cycle_s",
    "quota_per_s_hot": "ceiling_quota_per_s",
    "quota_per_s_spread": "ceiling_quota_per_s",
    "poll_idle_cpu_pct": "poll_busy_cpu_pct",
    "bus_publish_per_s": "ceiling_bus_publish_per_s",
    "bus_outbox_per_s": "ceiling_bus_outbox_per_s",
    "bus_consume_per_s": "ceiling_bus_consume_per_s",
    "webhook_per_s": "ceiling_webhook_per_s",
    "list_100k_s": "ceiling_list_100k_s",
}
# Figures that must be exactly zero (losses, over-admissions, events from a quiet poll).
ZEROS = (
    "launch_stuck",
    "quota_over_admissions_hot",
    "quota_over_admissions_spread",
    "quota_usage_mismatches_hot",
    "quota_usage_mismatches_spread",
    "poll_cycle_quiet_events",
    "poll_cycle_failed_polls",
)


def _run(part: Callable, amqp_url: str, database_url: str, logs: Path) -> dict:
    result = part(amqp_url, database_url, logs)
    return asyncio.run(result) if asyncio.iscoroutine(result) else result


def _bus(amqp_url: str, database_url: str, _logs: Path) -> dict:
    return asyncio.run(measure_bus(amqp_url, database_url, 1000))


def _scale(_amqp_url: str, database_url: str, _logs: Path) -> dict:
    [(_, listed, ceiling, _note), _differ] = measure_scale(database_url, 100_000)
    return {"list_100k_s": round(listed, 2), "ceiling_list_100k_s": round(ceiling, 2)}


PARTS: dict[str, Callable] = {
    "acceptance": measure_acceptance,
    "launches": measure_launches,
    "quota": measure_quota,
    "polling": measure_polling,
    "bus": _bus,
    "scale": _scale,
}


def baseline_rss_mb() -> float:
    """A Python process that has imported a service and done nothing: the floor of any RSS."""
    code = (
        "import services.gateway.app, services.poller.polling, pathlib;"
        "print(next(int(l.split()[1]) for l in pathlib.Path('/proc/self/status').read_text()"
        ".splitlines() if l.startswith('VmRSS:')) / 1024)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    return round(float(out.stdout.strip()), 1)


LEGEND = """
ratio = figure / ceiling. Ceilings: HTTP = wrk against GET /healthz on the same gateway;
launches = creates/s straight through the simulated cloud's driver (the same in-flight budget);
event = bare aio-pika publish -> consume; poll cycle = bare list calls; quota = a bare consume+ack
and a one-row locking transaction in series; bus = the bare aio-pika or asyncpg operation; idle
CPU is shown against the busy figure; RSS against a bare Python process with a service imported.
Logs of each part: .bench/logs/."""


def _met(key: str, value: float) -> str:
    target, how = TARGETS[key]
    ok = value >= target if how == "min" else value <= target
    return f"{'≥' if how == 'min' else '≤'} {target:g}  {'met' if ok else 'MISSED'}"


def _zero(key: str, value: float) -> str:
    if key not in ZEROS:
        return ""
    return f"= 0  {'met' if value == 0 else 'MISSED'}"


def table(figures: dict) -> str:
    lines = [f"{'figure':<28}{'value':>12}{'ceiling':>12}{'ratio':>8}   target"]
    for key, value in figures.items():
        if key.startswith("ceiling_") or not isinstance(value, int | float):
            continue
        ceiling = figures.get(CEILINGS.get(key, ""), None)
        ratio = f"{value / ceiling:>8.2f}" if isinstance(ceiling, int | float) and ceiling else ""
        shown = f"{ceiling:>12g}" if isinstance(ceiling, int | float) else f"{'':>12}"
        target = _met(key, value) if key in TARGETS else _zero(key, value)
        lines.append(f"{key:<28}{value:>12g}{shown}{ratio or '':>8}   {target}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", choices=sorted(PARTS), help="parts to run")
    args = parser.parse_args()
    configure_logging("bench", "WARNING")
    figures: dict = {}
    timings: dict[str, float] = {}
    began = time.monotonic()
    with provide_infrastructure() as infra:
        for name in args.only or PARTS:
            started = time.monotonic()
            with infra.isolated() as (amqp_url, database_url):
                figures.update(_run(PARTS[name], amqp_url, database_url, logs_dir(name)))
            timings[name] = round(time.monotonic() - started, 1)
            print(f"bench: {name} done in {timings[name]} s", file=sys.stderr, flush=True)
    rss = [v for k, v in figures.items() if k.startswith(("rss_mb", "poller_rss", "quota_rss"))]
    if rss:
        figures["rss_mb_max"] = max(rss)
        figures["ceiling_rss_mb"] = baseline_rss_mb()
    CEILINGS["rss_mb_max"] = "ceiling_rss_mb"
    print(table(figures))
    print(LEGEND)
    LATEST.parent.mkdir(exist_ok=True)
    # A partial run (--only) updates its parts' figures and keeps the others'.
    earlier = json.loads(LATEST.read_text()) if args.only and LATEST.exists() else {}
    LATEST.write_text(
        json.dumps(
            {
                **earlier,
                **figures,
                "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "platform": platform.platform(),
                },
                "part_seconds": {**earlier.get("part_seconds", {}), **timings},
                "total_seconds": round(time.monotonic() - began, 1),
            },
            indent=2,
        )
    )
    print(f"\nwritten to {LATEST.relative_to(ROOT)} in {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    main()
