"""W3C trace context from the HTTP request to the last log line, through events and the database.

One launch is one trace. The gateway continues a request's ``traceparent`` header (or starts a
trace) for the request (:class:`TraceMiddleware`), and answers with its own ``traceparent``.
Every event made under a trace carries a child of it in the CloudEvents Distributed Tracing
extension attributes ``traceparent``/``tracestate`` (:func:`event_trace`, called by
:meth:`shared.events.Envelope.wrap`): the outbox stores it with the envelope, and the bus repeats
it as the AMQP header ``traceparent``. The consumer handles each message in a child span of the
event's (:func:`span`). Work deferred through the database keeps the ``traceparent`` of the span
that recorded it and continues it later (:func:`continued`). Inside a span, ``trace_id`` and
``span_id`` are bound in structlog's context, so every log line carries them.

Spans are made by the OpenTelemetry SDK in every process (they give each hop its own span id);
they leave the process only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set, through OTLP over HTTP.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from typing import Any

import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Link, Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
_EXPORT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
# Probes and scrapes come every few seconds: no log line for them.
_QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

_propagator = TraceContextTextMapPropagator()
_provider: TracerProvider | None = None
log = structlog.get_logger(__name__)


def configure_tracing(service: str) -> None:
    """A process's spans, named for ``service``; exported only where an OTLP endpoint is set."""
    global _provider
    provider = TracerProvider(
        resource=Resource.create({"service.name": service, "service.namespace": "boreas"})
    )
    if any(os.environ.get(name) for name in _EXPORT_VARIABLES):
        # Imported here: a process that exports nothing never loads the exporter.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    if _provider is not None:
        _provider.shutdown()
    _provider = provider


def _tracer() -> trace.Tracer:
    global _provider
    if _provider is None:  # a service run in-process (tests): spans, never exported
        _provider = TracerProvider(resource=Resource.create({"service.namespace": "boreas"}))
    return _provider.get_tracer("boreas")


def context_of(traceparent: str | None, tracestate: str | None = None) -> Context:
    """The remote context a ``traceparent`` names; an empty context (a new trace) if none is
    given or it is malformed."""
    if not traceparent:
        return Context()
    carrier = {TRACEPARENT: traceparent}
    if tracestate:
        carrier[TRACESTATE] = tracestate
    return _propagator.extract(carrier, context=Context())


def _carrier(ctx: Context | None = None) -> dict[str, str]:
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=ctx)
    return carrier


def headers() -> dict[str, str]:
    """``traceparent`` (and ``tracestate``) of the span in progress, for an outgoing request."""
    return _carrier()


def current_traceparent() -> str | None:
    """The ``traceparent`` of the span in progress, to store with work deferred to later."""
    return _carrier().get(TRACEPARENT)


def ids(span_context: trace.SpanContext) -> dict[str, str]:
    """``trace_id`` and ``span_id`` as log fields (lowercase hex, as in ``traceparent``)."""
    if not span_context.is_valid:
        return {}
    return {
        "trace_id": trace.format_trace_id(span_context.trace_id),
        "span_id": trace.format_span_id(span_context.span_id),
    }


def ids_of(traceparent: str | None) -> dict[str, str]:
    """The log fields of a ``traceparent`` (e.g. of an event a batch emitted)."""
    return ids(trace.get_current_span(context_of(traceparent)).get_span_context())


def event_trace(topic: str, parent: Context | None = None) -> dict[str, str]:
    """The trace attributes of an event produced now: a producer span, child of ``parent`` (by
    default the span in progress), ended at once. Empty outside any trace."""
    ctx = otel_context.get_current() if parent is None else parent
    if not trace.get_current_span(ctx).get_span_context().is_valid:
        return {}
    producer = _tracer().start_span(
        f"{topic} publish",
        context=ctx,
        kind=SpanKind.PRODUCER,
        attributes={"messaging.system": "rabbitmq", "messaging.destination.name": topic},
    )
    producer.end()
    return _carrier(trace.set_span_in_context(producer, ctx))


@contextlib.contextmanager
def span(
    name: str,
    *,
    parent: Context | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    links: Sequence[Context] = (),
    attributes: Mapping[str, str] | None = None,
) -> Iterator[Span]:
    """A span made current (for the events made in it) and bound in structlog's context (for
    the lines logged in it). ``parent``: its context (empty: a new trace); None: the current.
    ``links``: contexts it also came from (a batch's other messages)."""
    linked = [
        Link(c)
        for c in (trace.get_current_span(ctx).get_span_context() for ctx in links)
        if c.is_valid
    ]
    started = _tracer().start_span(
        name, context=parent, kind=kind, links=linked, attributes=attributes
    )
    with (
        structlog.contextvars.bound_contextvars(**ids(started.get_span_context())),
        trace.use_span(started, end_on_exit=True),
    ):
        yield started


def continued(
    traceparent: str | None, name: str, **attributes: str
) -> contextlib.AbstractContextManager[Span]:
    """Work recorded earlier under ``traceparent`` (a row of the database), continued now in a
    span of that trace; a new trace when the row has none (recorded before traces were kept)."""
    return span(name, parent=context_of(traceparent), attributes=attributes)


def traceparent_in(body: str | bytes) -> str | None:
    """The ``traceparent`` attribute of a CloudEvent kept as JSON (a webhook delivery's body)."""
    try:
        found = json.loads(body).get(TRACEPARENT)
    except (ValueError, AttributeError):
        return None
    return found if isinstance(found, str) else None


def add_trace_ids(
    _logger: object, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: the current span's ids on lines that do not have them yet (those of
    the standard library's loggers, or logged where only OpenTelemetry's context is set)."""
    if "trace_id" not in event:
        event.update(ids(trace.get_current_span().get_span_context()))
    return event


class TraceMiddleware:
    """ASGI middleware: each HTTP request in a server span that continues the request's
    ``traceparent`` (or starts a trace), answered with the span's own ``traceparent``, and one
    ``http_request`` log line per request (probes and metric scrapes excepted)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = {
            key.decode("latin-1"): value.decode("latin-1")
            for key, value in scope.get("headers", ())
            if key in (b"traceparent", b"tracestate")
        }
        method, path = scope["method"], scope["path"]
        status: list[int] = []
        began = time.monotonic()
        with span(
            f"HTTP {method}",
            parent=context_of(incoming.get(TRACEPARENT), incoming.get(TRACESTATE)),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": path},
        ) as server:
            answer = [(k.encode(), v.encode()) for k, v in _carrier().items()]

            async def send_traced(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    status.append(message["status"])
                    server.set_attribute("http.response.status_code", message["status"])
                    message = {**message, "headers": [*message.get("headers", ()), *answer]}
                await send(message)

            try:
                await self.app(scope, receive, send_traced)
            finally:
                if path not in _QUIET_PATHS:
                    log.info(
                        "http_request",
                        method=method,
                        path=path,
                        # No answer sent: an exception went out, to Starlette's 500.
                        status=status[0] if status else 500,
                        duration_ms=round((time.monotonic() - began) * 1000, 1),
                    )
