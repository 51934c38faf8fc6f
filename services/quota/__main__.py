"""`python -m services.quota`: decides every launch against per-user limits (reserving room
atomically), follows usage from instance events, and repairs drift from its ledger."""

from services.quota.handlers import subscriptions
from services.quota.reconcile import reconcile_forever
from shared.config import QuotaSettings
from shared.runtime import serve


def main() -> None:
    settings = QuotaSettings()
    serve(
        "quota",
        settings,
        subscriptions=lambda _rt: subscriptions(),
        background=lambda rt: {
            "drift_repair": lambda: reconcile_forever(rt.pool, settings.quota_reconcile_interval)
        },
    )


if __name__ == "__main__":
    main()
