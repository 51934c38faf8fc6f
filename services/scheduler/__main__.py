"""`python -m services.scheduler`: the scheduler service.

Its role is to place launch requests on provider accounts and carry out instance actions.
So far it runs the shared runtime only: migrations, outbox relay, inbox, heartbeat.
"""

from shared.config import ServiceSettings
from shared.runtime import serve


def main() -> None:
    serve("scheduler", ServiceSettings())


if __name__ == "__main__":
    main()
