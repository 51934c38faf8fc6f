"""The OpenAPI document says what the gateway really answers: every error is problem+json."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details",
    "type": "object",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object"}},
    },
    "required": ["type", "title", "status", "detail"],
}
_PROBLEM_CONTENT = {
    "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
}
_DESCRIPTIONS = {
    400: "Bad request",
    401: "Missing, malformed, unknown, expired or revoked token",
    403: "Only an admin may do this",
    404: "Not found",
    409: "Conflict with the current state",
    413: "The request body is larger than BOREAS_MAX_BODY_BYTES",
    422: "Invalid request",
    429: "Too many requests",
    503: "The database is not reachable right now",
}


def install_problem_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        spec = get_openapi(
            title=app.title, version=app.version, summary=app.summary, routes=app.routes
        )
        components = spec.setdefault("components", {}).setdefault("schemas", {})
        components["Problem"] = PROBLEM_SCHEMA
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        for path in spec["paths"].values():
            for operation in path.values():
                responses = operation.setdefault("responses", {})
                codes = {422, 503}
                if operation.get("security"):
                    codes.add(401)
                if "requestBody" in operation:
                    codes.add(413)
                for code in codes:
                    responses.setdefault(str(code), {})
                for code, response in responses.items():
                    if int(code) >= 400:
                        response["description"] = response.get("description") or _DESCRIPTIONS.get(
                            int(code), "Error"
                        )
                        if response["description"] == "Successful Response":
                            response["description"] = _DESCRIPTIONS.get(int(code), "Error")
                        response["content"] = _PROBLEM_CONTENT
        app.openapi_schema = spec
        return spec

    # FastAPI's documented way to customise the document: replace the method on the instance.
    app.openapi = openapi  # type: ignore[method-assign]
