"""`python -m services.quota`: decides every launch against per-user limits (reserving room
atomically), follows usage from instance events, and repairs drift from its ledger."""

from services.quota.bootstrap import build
from shared.config import QuotaSettings
from shared.runtime import serve


def main() -> None:
    serve(build(QuotaSettings()))


if __name__ == "__main__":
    main()
