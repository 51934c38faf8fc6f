"""The audit log, for admins: who did what, newest first."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from services.gateway.deps import AdminUser, Db, GatewayDep
from services.gateway.pagination import CursorParam, decode_cursor, split_page
from services.gateway.repository import audit
from services.gateway.schemas import NO_NUL, AuditEntry, AuditPage

router = APIRouter(prefix="/v1/audit", tags=["audit"])


@router.get("", response_model=AuditPage, responses={400: {}, 403: {}})
async def read_audit_log(
    admin: AdminUser,
    db: Db,
    gw: GatewayDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: CursorParam = None,
    actor: Annotated[str | None, Query(max_length=64, pattern=NO_NUL)] = None,
    action: Annotated[str | None, Query(max_length=64, pattern=NO_NUL)] = None,
) -> AuditPage:
    before = decode_cursor(cursor, datetime.fromisoformat, int)
    rows = await audit.page(db, limit=limit + 1, before=before, actor=actor, action=action)
    rows, next_cursor = split_page(rows, limit, lambda r: (r["at"].isoformat(), r["id"]))
    items = [AuditEntry(**{**dict(r), "detail": json.loads(r["detail"])}) for r in rows]
    return AuditPage(items=items, next_cursor=next_cursor)
