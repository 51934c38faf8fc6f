"""RFC 9457 problem details for every error the gateway returns, 500s included (no stack traces)."""

from __future__ import annotations

from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

import asyncpg
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.gateway.pagination import BadCursor
from shared.db import TRANSIENT_DB_ERRORS
from shared.templates import Problem

log = structlog.get_logger(__name__)

PROBLEM_JSON = "application/problem+json"

# What a route declares under ``responses=`` (the OpenAPI generator fills in the problem body).
Responses = dict[int | str, dict[str, Any]]
ADMINS_ONLY: Responses = {403: {"description": "only an admin may do this"}}


class FieldsRefused(Exception):
    """A request refused field by field: 422 with ``errors``, each a JSON Pointer from the body's
    root and what is wrong there (``problems``, shared.templates.Problem-like), ``detail`` naming
    the first."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(f"{p.pointer or '/'}: {p.message}" for p in self.problems))


def problem(
    status: int,
    detail: str,
    *,
    title: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = {
        "type": "about:blank",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"There is nothing at {request.url.path}."
        elif exc.status_code == 405 and detail == "Method Not Allowed":
            detail = f"{request.method} is not allowed on {request.url.path}."
        return problem(exc.status_code, detail, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": [str(p) for p in e["loc"]], "msg": e["msg"], "type": e["type"]}
            for e in exc.errors()
        ]
        first: dict[str, Any] = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        detail = f"{'.'.join(first['loc'])}: {first['msg']}" if first["loc"] else first["msg"]
        return problem(422, detail, title="Invalid request", errors=errors)

    async def dependency_away(request: Request, exc: Exception) -> JSONResponse:
        log.warning("database_unavailable", path=request.url.path, error=repr(exc))
        return problem(
            503,
            "The database is not reachable right now; retry shortly.",
            headers={"Retry-After": "5"},
        )

    for error in TRANSIENT_DB_ERRORS:
        app.add_exception_handler(error, dependency_away)

    async def value_refused_by_database(request: Request, exc: Exception) -> JSONResponse:
        # A value the schema let through but PostgreSQL cannot store (e.g. NUL in a query
        # parameter): the client's error, not ours.
        log.info("value_refused_by_database", path=request.url.path, error=type(exc).__name__)
        return problem(422, "A value in the request cannot be stored or searched for.")

    app.add_exception_handler(asyncpg.exceptions.DataError, value_refused_by_database)

    @app.exception_handler(FieldsRefused)
    async def fields_refused(request: Request, exc: FieldsRefused) -> JSONResponse:
        first = exc.problems[0] if exc.problems else Problem("", "invalid request")
        return problem(
            422,
            f"{first.pointer or '/'}: {first.message}",
            title="Invalid request",
            errors=[{"pointer": p.pointer, "message": p.message} for p in exc.problems],
        )

    @app.exception_handler(BadCursor)
    async def bad_cursor(request: Request, exc: BadCursor) -> JSONResponse:
        return problem(400, str(exc))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled_error", path=request.url.path)
        return problem(500, "An unexpected error occurred; it has been logged.")
