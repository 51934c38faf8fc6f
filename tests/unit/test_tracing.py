"""W3C trace context: events made in a span carry a child of it (envelope attribute and AMQP
header), consumers and deferred work continue it, log lines name it, and the gateway's
middleware continues a request's ``traceparent`` and answers with its own."""

import json
import uuid

import httpx
import structlog
from cloudevents.core.bindings import rabbitmq
from cloudevents.core.formats.json import JSONFormat
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from shared import tracing
from shared.bus import to_amqp
from shared.consumer import BatchUnitOfWork
from shared.events import Envelope, InstanceRejected, parse_envelope

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CLIENT_SPAN}-01"


def rejected() -> InstanceRejected:
    return InstanceRejected(instance_id=uuid.uuid4(), owner="alice", reason="cpus limit")


def parts(traceparent: str | None) -> tuple[str, str]:
    assert traceparent is not None
    _version, trace_id, span_id, _flags = traceparent.split("-")
    return trace_id, span_id


def test_an_event_made_in_a_trace_carries_a_child_span_of_it() -> None:
    with tracing.span("work", parent=tracing.context_of(TRACEPARENT)) as work:
        first = Envelope.wrap(rejected(), source="boreas/quota")
        second = Envelope.wrap(rejected(), source="boreas/quota")

    work_span = tracing.ids(work.get_span_context())["span_id"]
    spans = {parts(e.traceparent)[1] for e in (first, second)}
    assert {parts(e.traceparent)[0] for e in (first, second)} == {TRACE_ID}
    assert len(spans) == 2 and work_span not in spans and CLIENT_SPAN not in spans


def test_an_event_made_outside_any_trace_has_no_trace_attributes() -> None:
    wire = json.loads(Envelope.wrap(rejected(), source="boreas/quota").to_bytes())
    assert "traceparent" not in wire and "tracestate" not in wire
    assert "traceparent" not in (to_amqp(parse_envelope(json.dumps(wire).encode())).headers or {})


def test_the_trace_travels_as_cloudevents_extension_and_amqp_header() -> None:
    envelope = Envelope.wrap(
        rejected(), source="boreas/quota", trace={"traceparent": TRACEPARENT, "tracestate": "k=v"}
    )
    message = to_amqp(envelope)

    assert message.headers["traceparent"] == TRACEPARENT
    assert message.headers["tracestate"] == "k=v"
    # The CloudEvents SDK reads it as the Distributed Tracing extension attribute.
    read = rabbitmq.from_structured(
        rabbitmq.RabbitMQMessage(headers={}, content_type=message.content_type, body=message.body),
        JSONFormat(),
    )
    assert read.get_extension("traceparent") == TRACEPARENT
    # Stored and read back (the outbox keeps the envelope as JSON), the trace is kept.
    assert parse_envelope(envelope.to_bytes()).traceparent == TRACEPARENT


def test_a_malformed_traceparent_starts_a_new_trace() -> None:
    with tracing.continued("00-not-a-trace-01", "work") as work:
        made = Envelope.wrap(rejected(), source="boreas/quota")
    trace_id = tracing.ids(work.get_span_context())["trace_id"]
    assert parts(made.traceparent)[0] == trace_id != TRACE_ID


def test_deferred_work_continues_the_trace_it_was_recorded_in() -> None:
    with tracing.span("handler", parent=tracing.context_of(TRACEPARENT)):
        stored = tracing.current_traceparent()
    with tracing.continued(stored, "worker"):
        made = Envelope.wrap(rejected(), source="boreas/scheduler")
    assert parts(made.traceparent)[0] == TRACE_ID


def test_a_batch_handlers_event_is_in_the_trace_of_its_cause() -> None:
    other = "0af7651916cd43dd8448eb211c80319c"
    cause = Envelope.wrap(
        rejected(),
        source="boreas/gateway",
        trace={"traceparent": f"00-{other}-b7ad6b7169203331-01"},
    )
    uow = BatchUnitOfWork(conn=None, source="boreas/quota")  # type: ignore[arg-type]
    # The batch's span is another message's trace: the cause's wins.
    with tracing.span("batch", parent=tracing.context_of(TRACEPARENT)):
        made = uow.publish(rejected(), cause=cause)
    assert parts(made.traceparent)[0] == other


def test_log_lines_in_a_span_carry_its_ids_and_none_outside() -> None:
    log = structlog.get_logger("test")
    with structlog.testing.capture_logs(
        processors=[structlog.contextvars.merge_contextvars, tracing.add_trace_ids]
    ) as lines:
        with tracing.span("work", parent=tracing.context_of(TRACEPARENT)) as work:
            log.info("inside")
        log.info("outside")

    inside, outside = lines
    assert inside["trace_id"] == TRACE_ID
    assert inside["span_id"] == tracing.ids(work.get_span_context())["span_id"]
    assert "trace_id" not in outside and "span_id" not in outside


def test_standard_library_lines_get_the_current_spans_ids() -> None:
    line: dict = {"event": "from uvicorn"}
    with tracing.span("work", parent=tracing.context_of(TRACEPARENT)):
        tracing.add_trace_ids(None, "info", line)
    assert line["trace_id"] == TRACE_ID


async def _seen(request: Request) -> JSONResponse:
    return JSONResponse({"traceparent": tracing.current_traceparent()})


def _client() -> httpx.AsyncClient:
    app = tracing.TraceMiddleware(Starlette(routes=[Route("/seen", _seen)]))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway")


async def test_the_middleware_continues_a_requests_traceparent_and_answers_with_its_own() -> None:
    with structlog.testing.capture_logs(
        processors=[structlog.contextvars.merge_contextvars]
    ) as lines:
        async with _client() as client:
            response = await client.get("/seen", headers={"traceparent": TRACEPARENT})

    answered = response.headers["traceparent"]
    assert parts(answered)[0] == TRACE_ID and parts(answered)[1] != CLIENT_SPAN
    assert response.json()["traceparent"] == answered  # the span the route ran in
    [line] = [line for line in lines if line["event"] == "http_request"]
    assert line["trace_id"] == TRACE_ID and line["span_id"] == parts(answered)[1]
    assert line["status"] == 200 and line["path"] == "/seen"


async def test_the_middleware_starts_a_trace_per_request_without_one() -> None:
    async with _client() as client:
        first = await client.get("/seen")
        second = await client.get("/seen", headers={"traceparent": "garbage"})
    assert parts(first.headers["traceparent"])[0] != parts(second.headers["traceparent"])[0]


def test_spans_are_exported_only_where_an_otlp_endpoint_is_set(monkeypatch) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    def exporters() -> list:
        processors = tracing._provider._active_span_processor._span_processors  # type: ignore[union-attr]
        return [p.span_exporter for p in processors]

    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    tracing.configure_tracing("quota")
    assert exporters() == []

    # No span ends while it is configured: nothing is sent, even to this loopback address.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    tracing.configure_tracing("quota")
    [exporter] = exporters()
    assert isinstance(exporter, OTLPSpanExporter)
    assert exporter._endpoint == "http://127.0.0.1:4318/v1/traces"

    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT")
    tracing.configure_tracing("quota")
    assert exporters() == []
