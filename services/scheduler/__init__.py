from shared.services import event_source

SOURCE = event_source("scheduler")
"""The source of the events this service publishes (through its bus or its outbox)."""
