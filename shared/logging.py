"""structlog set-up: JSON lines when not on a terminal, context bound per message.

Handlers bind ``topic``, ``event_id``, ``correlation_id`` and ``instance_id`` through
``structlog.contextvars`` so every line logged while handling one message carries them; within
a trace (:mod:`shared.tracing`, set up here too) every line carries ``trace_id`` and ``span_id``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from shared import tracing
from shared.redaction import redact_urls_in


def configure_logging(service: str, level: str = "INFO", *, json: bool | None = None) -> None:
    """Route structlog and the standard library (uvicorn, aio-pika, asyncpg) to one renderer,
    and set up the process's tracing."""
    tracing.configure_tracing(service)
    if json is None:
        json = not sys.stderr.isatty()
    shared_processors: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        tracing.add_trace_ids,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            *shared_processors,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared_processors, structlog.stdlib.add_logger_name],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _drop_color_message,
            structlog.processors.format_exc_info,
            _redact_urls,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiormq logs every reconnect attempt at length; our own lines say what matters.
    logging.getLogger("aiormq").setLevel(logging.WARNING)
    logging.getLogger("aio_pika").setLevel(logging.WARNING)
    # httpx and httpcore log every request with its full URL at INFO (a webhook's query token).
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)


def _drop_color_message(
    _logger: object, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    event.pop("color_message", None)  # uvicorn's ANSI copy of the message
    return event


def _redact_urls(
    _logger: object, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """No query string of any URL reaches a log line, whoever logged it."""
    return {
        key: redact_urls_in(value) if isinstance(value, str) else value
        for key, value in event.items()
    }
