"""`python -m services.quota`: the quota service.

Its role is to decide every launch against per-user limits and follow usage from events.
So far it runs the shared runtime only: migrations, outbox relay, inbox, heartbeat.
"""

from shared.config import ServiceSettings
from shared.runtime import serve


def main() -> None:
    serve("quota", ServiceSettings())


if __name__ == "__main__":
    main()
