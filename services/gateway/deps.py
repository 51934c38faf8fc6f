"""Dependencies of the routes, as Annotated aliases: ``user: CurrentUser``, ``gw: GatewayDep``."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import asyncpg
from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.gateway import cloud_check, security
from services.gateway.repository import identity
from services.gateway.repository.identity import User
from shared.config import GatewaySettings
from shared.credentials import CredentialCipher
from shared.outbox import OutboxRelay
from shared.runtime import Clock, ServiceRuntime
from shared.webhooks.targets import Resolver


@dataclass(frozen=True)
class Gateway:
    """Everything a route may use, built once in ``create_app``."""

    runtime: ServiceRuntime
    settings: GatewaySettings
    cipher: CredentialCipher
    clock: Clock
    resolver: Resolver  # webhook host names
    pause: Callable[[float], Awaitable[None]] = asyncio.sleep  # slows down guessed logins

    async def cloud_refusal(
        self, provider: str, credentials: Mapping[str, str], config: Mapping[str, Any]
    ) -> str | None:
        """Why the account's cloud refuses it (None: it accepts)."""
        return await cloud_check.cloud_refusal(
            provider, credentials, config, simulator_url=self.settings.simulator_url
        )

    @property
    def pool(self) -> asyncpg.Pool:  # set once the runtime has started
        return self.runtime.pool

    @property
    def outbox(self) -> OutboxRelay:
        """Commit through ``gw.outbox.transaction(conn)`` where the transaction emits events."""
        return self.runtime.outbox


async def get_gateway(request: Request) -> Gateway:
    return request.app.state.gateway


GatewayDep = Annotated[Gateway, Depends(get_gateway)]


async def request_connection(gw: GatewayDep) -> AsyncIterator[asyncpg.Connection]:
    """One pooled connection for the whole request (authentication included), given back as
    soon as the route returns: before a streamed response starts streaming."""
    async with gw.pool.acquire() as conn:
        yield conn


Db = Annotated[asyncpg.Connection, Depends(request_connection, scope="function")]

_bearer = HTTPBearer(auto_error=False, description="A token from POST /v1/tokens")


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


async def bearer_token(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    if credentials is None:
        raise _unauthorized("Send a token: Authorization: Bearer <token> (POST /v1/tokens).")
    if not security.token_is_well_formed(credentials.credentials):
        raise _unauthorized("That is not a Boreas token.")
    return credentials.credentials


async def current_user(
    gw: GatewayDep, db: Db, token: Annotated[str, Depends(bearer_token)]
) -> User:
    user = await identity.user_of_token(db, security.token_digest(token), gw.clock())
    if user is None:
        raise _unauthorized("The token is unknown, expired or revoked.")
    return user


CurrentUser = Annotated[User, Depends(current_user)]
BearerToken = Annotated[str, Depends(bearer_token)]


async def admin_user(user: CurrentUser) -> User:
    if not user.is_admin:
        raise HTTPException(403, "Only an admin may do this.")
    return user


AdminUser = Annotated[User, Depends(admin_user)]


def parse_id(text: str, what: str) -> uuid.UUID:
    """The uuid a path names; one that is not a uuid names nothing: 404, as an unknown id does,
    so a caller cannot tell the two apart (``what``: "instance", "webhook")."""
    try:
        return uuid.UUID(text)
    except ValueError:
        raise HTTPException(404, f"There is no such {what}.") from None


Found = TypeVar("Found")


async def visible_or_404(
    lookup: Callable[..., Awaitable[Found | None]],
    what: str,
    text_id: str,
    user: User,
    *,
    lock: bool = False,
) -> Found:
    """What ``lookup`` finds by the id a path names if ``user`` may see it (locked with
    ``lock``); 404 otherwise, alike."""
    found = await lookup(
        parse_id(text_id, what), viewer=user.username, everything=user.is_admin, for_update=lock
    )
    if found is None:
        raise HTTPException(404, f"There is no such {what}.")
    return found
