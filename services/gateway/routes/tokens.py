"""Logging in: tokens are issued for a username and its password, and revoked by their holder."""

from __future__ import annotations

import asyncio
import math
from datetime import timedelta

from fastapi import APIRouter, HTTPException, Request, Response

from services.gateway import security
from services.gateway.deps import BearerToken, CurrentUser, GatewayDep
from services.gateway.repository import audit, identity
from services.gateway.schemas import TokenIssued, TokenRequest

router = APIRouter(prefix="/v1/tokens", tags=["tokens"])

RATE_WINDOW = timedelta(minutes=1)


@router.post(
    "",
    status_code=201,
    response_model=TokenIssued,
    responses={
        401: {"description": "wrong username or password"},
        429: {"description": "slow down"},
    },
)
async def issue_token(body: TokenRequest, request: Request, gw: GatewayDep) -> TokenIssued:
    now = gw.clock()
    client = request.client.host if request.client else "unknown"
    async with gw.pool.acquire() as conn, conn.transaction():
        limit = gw.settings.token_requests_per_minute
        for bucket in (f"user:{body.username}", f"addr:{client}"):
            hits, window_ends = await identity.hit_rate_limit(conn, bucket, now, RATE_WINDOW)
            if hits > limit:
                retry = max(1, math.ceil((window_ends - now).total_seconds()))
                raise HTTPException(
                    429,
                    f"Too many token requests; try again in {retry} s.",
                    headers={"Retry-After": str(retry)},
                )
        found = await identity.credentials_of(conn, body.username)
    user, stored_hash = found if found else (None, None)
    if not await asyncio.to_thread(security.verify_password, stored_hash, body.password):
        async with gw.pool.acquire() as conn, conn.transaction():
            await audit.record(conn, actor=body.username, action="login_failed")
        raise HTTPException(401, "Wrong username or password.")
    assert user is not None
    token = security.new_token()
    expires_at = now + timedelta(seconds=gw.settings.token_ttl_seconds)
    async with gw.pool.acquire() as conn, conn.transaction():
        await identity.store_token(
            conn, digest=security.token_digest(token), user_id=user.id, expires_at=expires_at
        )
        await audit.record(conn, actor=user.username, action="login")
    return TokenIssued(token=token, expires_at=expires_at)


@router.delete("/current", status_code=204, response_class=Response)
async def revoke_current_token(user: CurrentUser, token: BearerToken, gw: GatewayDep) -> Response:
    async with gw.pool.acquire() as conn, conn.transaction():
        await identity.revoke_token(conn, security.token_digest(token), gw.clock())
        await audit.record(conn, actor=user.username, action="logout")
    return Response(status_code=204)
