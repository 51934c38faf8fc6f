"""`python -m services.notifier`: delivers every public event to the configured sinks: syslog
(BOREAS_SYSLOG_URL = udp://host:port, tcp://host:port or unix:///path) and the webhooks users
registered through the gateway."""

from services.notifier.delivery import WebhookDeliverer
from services.notifier.handlers import subscriptions
from shared.config import NotifierSettings
from shared.runtime import serve


def main() -> None:
    settings = NotifierSettings()
    cipher = settings.credential_cipher()
    serve(
        "notifier",
        settings,
        subscriptions=lambda rt: subscriptions(syslog_url=settings.syslog_url, clock=rt.clock),
        background=lambda rt: {
            "webhook_delivery": WebhookDeliverer(
                rt.pool, cipher, settings, rt.clock, on_commit=rt.outbox.wake
            ).run
        },
    )


if __name__ == "__main__":
    main()
