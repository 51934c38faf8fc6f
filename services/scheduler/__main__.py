"""`python -m services.scheduler`: places launch requests on provider accounts and carries out
instance actions (stop, start, reboot, terminate) through apache-libcloud."""

from services.scheduler.handlers import subscriptions
from shared.clouds.connections import CloudConnections
from shared.config import ServiceSettings
from shared.runtime import serve


def main() -> None:
    settings = ServiceSettings()
    clouds = CloudConnections(settings.credential_cipher(), simulator_url=settings.simulator_url)
    serve("scheduler", settings, lambda _rt: subscriptions(clouds=clouds))


if __name__ == "__main__":
    main()
