"""`python -m services.poller`: the poller service.

Its role is to watch every provider account and publish each instance state change.
So far it runs the shared runtime only: migrations, outbox relay, inbox, heartbeat.
"""

from shared.config import ServiceSettings
from shared.runtime import serve


def main() -> None:
    serve("poller", ServiceSettings())


if __name__ == "__main__":
    main()
