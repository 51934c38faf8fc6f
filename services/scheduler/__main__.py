"""`python -m services.scheduler`: places launch requests on provider accounts and carries out
instance actions (stop, start, reboot, terminate) through apache-libcloud."""

from services.scheduler.bootstrap import build
from shared.config import SchedulerSettings
from shared.runtime import serve


def main() -> None:
    serve(build(SchedulerSettings()))


if __name__ == "__main__":
    main()
