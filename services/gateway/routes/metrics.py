"""Prometheus metrics of this gateway process (docs/operations.md, "Metrics and alerts").

Unauthenticated, like ``/healthz``: they carry no user, instance or account id. Not in the
OpenAPI document, which describes the API users call."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from shared.metrics import exposition

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    body, content_type = exposition()
    return Response(body, headers={"Content-Type": content_type})
