"""`python -m services.poller`: watches every provider account (one list call per account per
interval, shared among replicas) and publishes each instance state change."""

from services.poller.bootstrap import build
from shared.config import PollerSettings
from shared.runtime import serve


def main() -> None:
    serve(build(PollerSettings()))


if __name__ == "__main__":
    main()
