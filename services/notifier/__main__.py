"""`python -m services.notifier`: delivers every public event to the configured sinks: syslog
(BOREAS_SYSLOG_URL = udp://host:port, tcp://host:port or unix:///path) and the webhooks users
registered through the gateway."""

from services.notifier.bootstrap import build
from shared.config import NotifierSettings
from shared.runtime import serve


def main() -> None:
    serve(build(NotifierSettings()))


if __name__ == "__main__":
    main()
