"""`python -m shared.clouds.simulator`: the simulated cloud on BOREAS_SIMULATOR_HOST (127.0.0.1)
and BOREAS_SIMULATOR_PORT (8090), its state in the schema `simulator` of BOREAS_DATABASE_URL."""

import gc
import os

import uvicorn

from shared.clouds.simulator.server import create_simulator_app
from shared.config import DEFAULT_DATABASE_URL
from shared.logging import configure_logging


def main() -> None:
    configure_logging("simulator", os.environ.get("BOREAS_LOG_LEVEL", "INFO"))
    app = create_simulator_app(os.environ.get("BOREAS_DATABASE_URL", DEFAULT_DATABASE_URL))
    # What start-up loaded lives as long as the process: keep it out of the full collections
    # that large listings (hundreds of thousands of rows) set off.
    gc.freeze()
    uvicorn.run(
        app,
        host=os.environ.get("BOREAS_SIMULATOR_HOST", "127.0.0.1"),
        port=int(os.environ.get("BOREAS_SIMULATOR_PORT", "8090")),
        log_config=None,
        access_log=False,
        # Clients keep connections to it alive between calls: do not close them under them.
        timeout_keep_alive=75,
    )


if __name__ == "__main__":
    main()
