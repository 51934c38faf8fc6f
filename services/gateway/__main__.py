"""`python -m services.gateway`: the HTTP API, served by uvicorn on BOREAS_GATEWAY_PORT."""

import uvicorn

from services.gateway.app import create_app
from shared.config import GatewaySettings
from shared.logging import configure_logging


def main() -> None:
    settings = GatewaySettings()
    configure_logging("gateway", settings.log_level)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.gateway_host,
        port=settings.gateway_port,
        log_config=None,  # uvicorn's loggers go through our structlog handler
        access_log=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace),
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
