"""`python -m services.scheduler`: places launch requests on provider accounts and carries out
instance actions (stop, start, reboot, terminate) through apache-libcloud."""

from services.scheduler.wiring import scheduler_parts
from shared.config import SchedulerSettings
from shared.runtime import serve


def main() -> None:
    settings = SchedulerSettings()
    handlers, loops = scheduler_parts(settings)
    serve("scheduler", settings, subscriptions=handlers, background=loops)


if __name__ == "__main__":
    main()
