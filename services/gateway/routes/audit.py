"""The audit log, for admins: who did what, newest first."""

from __future__ import annotations

from datetime import datetime
from functools import partial

from fastapi import APIRouter

from services.gateway.deps import AdminUser, Db, GatewayDep
from services.gateway.pagination import CursorParam, Keyset, LogPageSize, NameFilter, fetch_page
from services.gateway.repository import audit
from services.gateway.schemas import AuditEntry, AuditPage

router = APIRouter(prefix="/v1/audit", tags=["audit"])

NEWEST_FIRST: Keyset[AuditEntry] = Keyset(
    lambda entry: (entry.at.isoformat(), entry.id), (datetime.fromisoformat, int)
)


@router.get("", response_model=AuditPage, responses={400: {}, 403: {}})
async def read_audit_log(
    admin: AdminUser,
    db: Db,
    gw: GatewayDep,
    limit: LogPageSize = 50,
    cursor: CursorParam = None,
    actor: NameFilter = None,
    action: NameFilter = None,
) -> AuditPage:
    items, next_cursor = await fetch_page(
        partial(audit.page, db, actor=actor, action=action),
        NEWEST_FIRST,
        limit=limit,
        cursor=cursor,
    )
    return AuditPage(items=items, next_cursor=next_cursor)
