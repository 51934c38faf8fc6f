"""The public part of the event catalog as an AsyncAPI 3.0 document (``python -m shared.asyncapi``).

Write it with ``python -m shared.asyncapi > docs/asyncapi.json``.

Generated, never edited by hand: ``tests/contract`` fails when the committed file and the code
differ, and validates it against the official AsyncAPI 3.0.0 JSON Schema.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from shared.events import CLOUDEVENTS_CONTENT_TYPE, EXCHANGE, INTERNAL_EXCHANGE, PUBLIC, Event
from shared.services import event_source

_EXAMPLE_TIME = datetime(2026, 1, 1, 12, 0, tzinfo=UTC).isoformat().replace("+00:00", "Z")
_EXAMPLE_ID = "5f0c1c7e-0d4b-4d61-9a3c-2b6f0e0a9c11"


def _example(schema: dict[str, Any], schemas: dict[str, Any]) -> Any:
    if "$ref" in schema:
        return _example(schemas[schema["$ref"].rsplit("/", 1)[1]], schemas)
    if "anyOf" in schema:
        return _example(next(s for s in schema["anyOf"] if s.get("type") != "null"), schemas)
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        return {k: _example(v, schemas) for k, v in schema.get("properties", {}).items()}
    if kind == "array":
        return [_example(schema.get("items", {"type": "string"}), schemas)]
    return _scalar_example(schema)


_SCALAR_EXAMPLES: dict[str, Any] = {"integer": 2, "number": 0.5, "boolean": True}
_STRING_EXAMPLES = {"uuid": _EXAMPLE_ID, "date-time": _EXAMPLE_TIME}


def _scalar_example(schema: dict[str, Any]) -> Any:
    kind = schema.get("type")
    if kind in _SCALAR_EXAMPLES:
        return _SCALAR_EXAMPLES[kind]
    return _STRING_EXAMPLES.get(schema.get("format", ""), "text")


def _envelope_schema(cls: type[Event], data_ref: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["specversion", "id", "source", "type", "time", "dataversion", "data"],
        "properties": {
            "specversion": {"const": "1.0"},
            "id": {"type": "string", "description": "unique; dedupe on it"},
            "source": {"type": "string", "description": "boreas/<service>"},
            "type": {"const": cls.ce_type()},
            "time": {"type": "string", "format": "date-time"},
            "subject": {"type": "string", "description": "the instance id, where there is one"},
            "datacontenttype": {"const": "application/json"},
            "dataversion": {"type": "string", "description": f"schema version, now {cls.VERSION}"},
            "correlationid": {"type": "string"},
            "traceparent": {
                "type": "string",
                "description": "W3C trace context the event was made in (CloudEvents "
                "Distributed Tracing extension); also the AMQP header traceparent",
            },
            "tracestate": {"type": "string", "description": "W3C trace state, with traceparent"},
            "data": {"$ref": data_ref},
        },
    }


def build() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for cls in PUBLIC:
        name = cls.__name__
        schema = cls.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[name] = schema
    for cls in PUBLIC:
        name = cls.__name__
        data = _example(schemas[name], schemas)
        example = {
            "specversion": "1.0",
            "id": _EXAMPLE_ID,
            "source": event_source("gateway"),
            "type": cls.ce_type(),
            "time": _EXAMPLE_TIME,
            "datacontenttype": "application/json",
            "dataversion": cls.VERSION,
            "data": data,
        }
        if cls.SUBJECT_FIELD:
            example["subject"] = data[cls.SUBJECT_FIELD]
        messages[name] = {
            "name": name,
            "title": f"{cls.TOPIC} v{cls.VERSION}",
            "summary": (cls.__doc__ or "").strip().splitlines()[0],
            "contentType": CLOUDEVENTS_CONTENT_TYPE,
            "payload": _envelope_schema(cls, f"#/components/schemas/{name}"),
            "examples": [{"name": "example", "payload": example}],
            "bindings": {"amqp": {"messageType": cls.ce_type(), "bindingVersion": "0.3.0"}},
        }
        channel_id = cls.TOPIC.replace(".", "_")
        channels[channel_id] = {
            "address": cls.TOPIC,
            "description": f"Routing key {cls.TOPIC}.",
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
            "bindings": {
                "amqp": {
                    "is": "routingKey",
                    "exchange": {
                        "name": EXCHANGE,
                        "type": "topic",
                        "durable": True,
                        "autoDelete": False,
                        "vhost": "/",
                    },
                    "bindingVersion": "0.3.0",
                }
            },
        }
        operations[f"publish_{channel_id}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "messages": [{"$ref": f"#/channels/{channel_id}/messages/{name}"}],
            "bindings": {"amqp": {"deliveryMode": 2, "mandatory": True, "bindingVersion": "0.3.0"}},
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Boreas events",
            "version": "1.0.0",
            "description": (
                "Every event Boreas publishes for external systems, on the RabbitMQ topic "
                f"exchange `{EXCHANGE}`, as CloudEvents 1.0 in structured mode. Bind your own "
                "queue with a pattern (`instance.#`, `quota.#`, `#`); dedupe on `id`. The "
                f"services' internal events travel on `{INTERNAL_EXCHANGE}`, which subscriber "
                "accounts cannot read."
            ),
        },
        "defaultContentType": CLOUDEVENTS_CONTENT_TYPE,
        "servers": {
            "local": {"host": "127.0.0.1:5672", "protocol": "amqp", "protocolVersion": "0.9.1"}
        },
        "channels": channels,
        "operations": operations,
        "components": {"schemas": schemas, "messages": messages},
    }


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=False) + "\n"


if __name__ == "__main__":
    print(render(), end="")
