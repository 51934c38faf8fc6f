"""`python -m services.notifier`: the notifier service.

Its role is to deliver events to syslog, signed webhooks and live streams.
So far it runs the shared runtime only: migrations, outbox relay, inbox, heartbeat.
"""

from shared.config import ServiceSettings
from shared.runtime import serve


def main() -> None:
    serve("notifier", ServiceSettings())


if __name__ == "__main__":
    main()
