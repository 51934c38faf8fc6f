"""`python -m services.poller`: watches every provider account (one list call per account per
interval, shared among replicas) and publishes each instance state change."""

from services.poller.wiring import poller_parts
from shared.config import PollerSettings
from shared.runtime import serve


def main() -> None:
    settings = PollerSettings()
    handlers, loops = poller_parts(settings)
    serve("poller", settings, subscriptions=handlers, background=loops)


if __name__ == "__main__":
    main()
