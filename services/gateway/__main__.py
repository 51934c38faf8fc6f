"""`python -m services.gateway`: the HTTP API, served by uvicorn (uvloop, httptools) on
BOREAS_GATEWAY_PORT, in BOREAS_GATEWAY_WORKERS processes."""

import sys
from typing import Any

import uvicorn

from services.gateway.app import create_app
from shared.config import GatewaySettings
from shared.logging import configure_logging


def main() -> None:
    settings = GatewaySettings()
    configure_logging("gateway", settings.log_level)
    options: dict[str, Any] = {
        "host": settings.gateway_host,
        "port": settings.gateway_port,
        "log_config": None,  # uvicorn's loggers go through our structlog handler
        "access_log": False,
        "timeout_graceful_shutdown": int(settings.shutdown_grace),
    }
    if settings.gateway_workers > 1:
        # Each worker builds its own app (and runtime: a replica of the gateway service);
        # uvicorn's supervisor starts another if one dies.
        uvicorn.run(
            "services.gateway.app:app_from_environment",
            factory=True,
            workers=settings.gateway_workers,
            **options,
        )
        return
    app = create_app(settings)
    uvicorn.Server(uvicorn.Config(app, **options)).run()
    if app.state.runtime.fatal.is_set():
        sys.exit(1)  # a background loop gave up: let the supervisor start a fresh process


if __name__ == "__main__":
    main()
