"""Logging in: tokens are issued for a username and its password, and revoked by their holder."""

from __future__ import annotations

import asyncio
import math
from datetime import datetime, timedelta
from typing import NoReturn

from fastapi import APIRouter, HTTPException, Request, Response

from services.gateway import security
from services.gateway.deps import BearerToken, CurrentUser, GatewayDep
from services.gateway.repository import audit, identity
from services.gateway.schemas import TokenIssued, TokenRequest

router = APIRouter(prefix="/v1/tokens", tags=["tokens"])

RATE_WINDOW = timedelta(minutes=1)
# Each failure for a username past its limit adds this much wait to the next attempts on it.
LOGIN_PAUSE_STEP = 0.5
MAX_LOGIN_PAUSE = 5.0


@router.post(
    "",
    status_code=201,
    response_model=TokenIssued,
    responses={
        401: {"description": "wrong username or password"},
        403: {"description": "the account is disabled"},
        429: {"description": "slow down"},
    },
)
async def issue_token(body: TokenRequest, request: Request, gw: GatewayDep) -> TokenIssued:
    now = gw.clock()
    client = request.client.host if request.client else "unknown"
    settings = gw.settings
    pair, username = f"failed-pair:{client} {body.username}", f"failed-user:{body.username}"
    async with gw.pool.acquire() as conn, conn.transaction():
        hits, window_ends = await identity.hit_rate_limit(conn, f"addr:{client}", now, RATE_WINDOW)
        if hits > settings.token_requests_per_minute:
            _too_many("Too many token requests from your address", window_ends, now)
        failures, window_ends = await identity.rate_count(conn, pair, now, RATE_WINDOW)
        if failures >= settings.login_failures_per_minute:
            _too_many(
                "Too many failed logins for this username from your address", window_ends, now
            )
        failures_anywhere, _ = await identity.rate_count(conn, username, now, RATE_WINDOW)
        found = await identity.credentials_of(conn, body.username)
    # A username guessed at from many addresses: every attempt on it waits, the right password
    # too (holding no connection), so guessing slows to a crawl and the user still gets in.
    excess = failures_anywhere - settings.login_failures_per_minute + 1
    if excess > 0:
        await gw.pause(min(MAX_LOGIN_PAUSE, LOGIN_PAUSE_STEP * excess))
    stored_hash = found.password_hash if found else None
    verified = await asyncio.to_thread(security.verify_password, stored_hash, body.password)
    if found is None or not verified:
        async with gw.pool.acquire() as conn, conn.transaction():
            for bucket in (pair, username):
                await identity.hit_rate_limit(conn, bucket, now, RATE_WINDOW)
            await audit.record(
                conn, actor=body.username, action="login_failed", detail={"address": client}
            )
        raise HTTPException(401, "Wrong username or password.")
    user = found.user
    if found.disabled:  # said only to whoever knows the password
        raise HTTPException(403, "This account is disabled; ask an admin to enable it.")
    token = security.new_token()
    expires_at = now + timedelta(seconds=settings.token_ttl_seconds)
    async with gw.pool.acquire() as conn, conn.transaction():
        await identity.store_token(
            conn, digest=security.token_digest(token), user_id=user.id, expires_at=expires_at
        )
        await audit.record(conn, actor=user.username, action="login")
    return TokenIssued(token=token, expires_at=expires_at)


def _too_many(what: str, window_ends: datetime, now: datetime) -> NoReturn:
    retry = max(1, math.ceil((window_ends - now).total_seconds()))
    raise HTTPException(
        429, f"{what}; try again in {retry} s.", headers={"Retry-After": str(retry)}
    )


@router.delete("/current", status_code=204, response_class=Response)
async def revoke_current_token(user: CurrentUser, token: BearerToken, gw: GatewayDep) -> Response:
    async with gw.pool.acquire() as conn, conn.transaction():
        await identity.revoke_token(conn, security.token_digest(token), gw.clock())
        await audit.record(conn, actor=user.username, action="logout")
    return Response(status_code=204)
