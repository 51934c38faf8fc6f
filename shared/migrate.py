"""`python -m shared.migrate [service ...]`: apply every service's migrations (or the named
services'), then exit; status 0 when every schema is up to date.

Services migrate their own schema at start anyway, under the same advisory lock, so this is
never required. It lets a deployment apply a release's migrations once, before the new pods
start (the Kubernetes Job in deploy/k8s), so a failing migration shows as one failed Job
instead of every replica failing its start. Only ``BOREAS_DATABASE_URL`` is read.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
from pathlib import Path

import structlog

from shared.config import DEFAULT_DATABASE_URL
from shared.db import create_pool, migrate, service_migrations
from shared.logging import configure_logging
from shared.services import SERVICES

log = structlog.get_logger(__name__)


def service_directory(service: str) -> Path:
    """Where ``services/<service>`` (with its migrations/) is installed, without importing it."""
    spec = importlib.util.find_spec(f"services.{service}")
    if spec is None or not spec.submodule_search_locations:
        raise LookupError(f"no package services.{service}")
    return Path(next(iter(spec.submodule_search_locations)))


async def migrate_services(
    database_url: str, services: tuple[str, ...] = SERVICES
) -> dict[str, list[str]]:
    """Each service's schema migrated in turn; the versions applied now, by service."""
    applied: dict[str, list[str]] = {}
    for service in services:
        pool = await create_pool(database_url, service, max_size=1)
        try:
            applied[service] = await migrate(
                pool, service, service_migrations(service_directory(service))
            )
        finally:
            await pool.close()
        log.info("schema_up_to_date", schema=service, applied=len(applied[service]))
    return applied


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m shared.migrate", description=__doc__)
    parser.add_argument("services", nargs="*", metavar="service", help=", ".join(SERVICES))
    args = parser.parse_args(argv)
    unknown = sorted(set(args.services) - set(SERVICES))
    if unknown:
        parser.error(f"unknown service {', '.join(unknown)}: one of {', '.join(SERVICES)}")
    configure_logging("migrate", os.environ.get("BOREAS_LOG_LEVEL", "INFO"))
    database_url = os.environ.get("BOREAS_DATABASE_URL", DEFAULT_DATABASE_URL)
    asyncio.run(migrate_services(database_url, tuple(args.services) or SERVICES))


if __name__ == "__main__":
    main()
