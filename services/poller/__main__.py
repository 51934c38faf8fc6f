"""`python -m services.poller`: watches every provider account (one list call per account per
interval, shared among replicas) and publishes each instance state change."""

from services.poller.handlers import subscriptions
from services.poller.polling import Poller
from shared.config import PollerSettings
from shared.runtime import serve


def main() -> None:
    settings = PollerSettings()
    clouds = settings.cloud_connections()
    serve(
        "poller",
        settings,
        subscriptions=lambda _rt: subscriptions(clouds=clouds),
        background=lambda rt: {
            "polling": Poller(rt.pool, clouds, settings, rt.clock, rt.outbox.wake).run
        },
    )


if __name__ == "__main__":
    main()
