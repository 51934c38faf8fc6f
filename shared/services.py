"""The Boreas services, named once: the status page, ``make run`` and the tests all list these.

Each is a package ``services/<name>`` started with ``python -m services.<name>``; a unit test
keeps this tuple, those packages and ``deploy/compose.yaml`` in step.
"""

SERVICES: tuple[str, ...] = ("gateway", "scheduler", "poller", "quota", "notifier")
