"""The audit log, for admins: who did what, newest first."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from services.gateway.deps import AdminUser, GatewayDep
from services.gateway.pagination import decode_cursor, encode_cursor
from services.gateway.repository import audit
from services.gateway.schemas import NO_NUL, AuditEntry, AuditPage

router = APIRouter(prefix="/v1/audit", tags=["audit"])


@router.get("", response_model=AuditPage, responses={400: {}, 403: {}})
async def read_audit_log(
    admin: AdminUser,
    gw: GatewayDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(min_length=1, max_length=512, pattern=NO_NUL)] = None,
    actor: Annotated[str | None, Query(max_length=64, pattern=NO_NUL)] = None,
    action: Annotated[str | None, Query(max_length=64, pattern=NO_NUL)] = None,
) -> AuditPage:
    before = decode_cursor(cursor, datetime.fromisoformat, int)
    rows = await audit.page(gw.pool, limit=limit + 1, before=before, actor=actor, action=action)
    more = len(rows) > limit
    rows = rows[:limit]
    items = [AuditEntry(**{**dict(r), "detail": json.loads(r["detail"])}) for r in rows]
    next_cursor = encode_cursor(rows[-1]["at"].isoformat(), rows[-1]["id"]) if more else None
    return AuditPage(items=items, next_cursor=next_cursor)
