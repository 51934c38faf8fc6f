"""`python -m services.notifier`: delivers every public event to the configured sinks (syslog
today: BOREAS_SYSLOG_URL = udp://host:port, tcp://host:port or unix:///path)."""

from services.notifier.handlers import subscriptions
from shared.config import NotifierSettings
from shared.runtime import serve


def main() -> None:
    settings = NotifierSettings()
    serve(
        "notifier",
        settings,
        subscriptions=lambda _rt: subscriptions(syslog_url=settings.syslog_url),
    )


if __name__ == "__main__":
    main()
