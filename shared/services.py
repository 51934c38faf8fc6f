"""The Boreas services, named once: the status page, ``make run`` and the tests all list these.

Each is a package ``services/<name>`` started with ``python -m services.<name>``; a unit test
keeps this tuple, those packages and ``deploy/compose.yaml`` in step.
"""

SERVICES: tuple[str, ...] = ("gateway", "scheduler", "poller", "quota", "notifier")


def event_source(service: str) -> str:
    """The CloudEvent ``source`` of the events ``service`` publishes, spelled here only: its
    runtime's bus and its outbox rows both take it from here."""
    return f"boreas/{service}"
