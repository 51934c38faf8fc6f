"""The simulated cloud's HTTP API (``python -m shared.clouds.simulator``), state in PostgreSQL.

Callers authenticate with HTTP Basic (api key, api secret). ``PUT /v1/account`` creates the
account on first use (remembering a hash of the secret) or updates its settings; every other call
needs the same secret. Errors are JSON ``{"code", "message"}`` with the status a cloud would use.

The other calls are the cloud's API proper. Each waits the account's ``api_latency`` (holding no
database connection) before it is served, but for a create, which makes its node first and then
waits before it answers; with an ``api_rate``, a call that finds the account's
token bucket empty is refused at once with 503 ``RequestLimitExceeded``, as EC2 does.
``PUT /v1/account`` configures the simulation, so it is neither delayed nor throttled.
"""

import asyncio
import hashlib
import hmac
import json
import random
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from pydantic import BaseModel, Field

from shared.clouds.simulator.accounts import AccountCache, AccountEntry
from shared.clouds.simulator.listing import NODE_COLUMNS, node_json, nodes_json
from shared.clouds.simulator.model import (
    LIVE,
    AccountSettings,
    IncorrectState,
    effective_state,
    next_state,
)
from shared.clouds.simulator.throttle import Throttle
from shared.db import create_pool, load_migrations, migrate
from shared.runtime import Clock, utcnow

SCHEMA = "simulator"
MIGRATIONS = Path(__file__).with_name("migrations")
# The one tag with an index (migration 0002): Boreas finds its node for an instance by it.
INDEXED_TAG = "boreas-instance"


class CloudError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class NewNode(BaseModel):
    name: Annotated[str, Field(min_length=1, max_length=255)]
    size: str
    image: str
    region: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)


def _secret_hash(secret: str) -> str:
    return hashlib.sha256(b"boreas-simulator:" + secret.encode()).hexdigest()


def _state_now(
    row: asyncpg.Record, settings: AccountSettings, now: datetime
) -> tuple[str, datetime]:
    return effective_state(
        row["state"],
        row["since"],
        now,
        settings.timings,
        node_id=row["id"],
        deaths_per_hour=settings.deaths_per_hour,
    )


def _json(text: str, status_code: int = 200) -> Response:
    return Response(text, status_code=status_code, media_type="application/json")


def _tag_filter(tag: str) -> tuple[str, str]:
    """``key=value`` → (SQL condition on $3, $3). The indexed key is named literally, or
    PostgreSQL could not use the index."""
    key, sep, value = tag.partition("=")
    if not sep or not key:
        raise CloudError(400, "InvalidParameterValue", "tag must be key=value")
    if key == INDEXED_TAG:
        return f"tags->>'{INDEXED_TAG}' = $3", value
    return "tags @> $3::jsonb", json.dumps({key: value})


def create_simulator_app(database_url: str, *, clock: Clock = utcnow) -> FastAPI:
    state: dict[str, asyncpg.Pool] = {}

    async def load_account(api_key: str) -> AccountEntry | None:
        row = await state["pool"].fetchrow(
            "SELECT secret_hash, settings FROM accounts WHERE api_key = $1", api_key
        )
        if row is None:
            return None
        return AccountEntry(
            row["secret_hash"], AccountSettings.model_validate_json(row["settings"])
        )

    accounts = AccountCache(load_account)
    throttle = Throttle()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await create_pool(database_url, SCHEMA)
        await migrate(pool, SCHEMA, load_migrations("simulator", MIGRATIONS))
        state["pool"] = pool
        try:
            yield
        finally:
            await pool.close()

    app = FastAPI(title="Boreas simulated cloud", version="1", lifespan=lifespan)
    basic = HTTPBasic(auto_error=False)

    @app.exception_handler(CloudError)
    async def cloud_error(request: Request, exc: CloudError) -> JSONResponse:
        return JSONResponse({"code": exc.code, "message": exc.message}, status_code=exc.status)

    async def caller(
        credentials: Annotated[HTTPBasicCredentials | None, Depends(basic)],
    ) -> tuple[str, AccountSettings]:
        if credentials is None:
            raise CloudError(401, "AuthFailure", "credentials required")
        key = credentials.username
        entry = await accounts.get(key)
        if entry is None or not hmac.compare_digest(
            entry.secret_hash, _secret_hash(credentials.password)
        ):
            raise CloudError(401, "AuthFailure", "unknown api key or wrong secret")
        settings = entry.settings
        if not throttle.allow(key, settings.api_rate, settings.api_burst):
            raise CloudError(503, "RequestLimitExceeded", "Request limit exceeded.")
        return key, settings

    async def account(
        acct: Annotated[tuple[str, AccountSettings], Depends(caller)],
    ) -> tuple[str, AccountSettings]:
        if acct[1].api_latency:
            await asyncio.sleep(acct[1].api_latency)
        return acct

    Account = Annotated[tuple[str, AccountSettings], Depends(account)]
    # A create makes its node first and is slow to answer, as a real cloud's can be: a caller
    # that gives up (or dies) meanwhile leaves a node it never heard of.
    Caller = Annotated[tuple[str, AccountSettings], Depends(caller)]

    @app.put("/v1/account")
    async def ensure_account(
        settings: AccountSettings,
        credentials: Annotated[HTTPBasicCredentials | None, Depends(basic)],
    ) -> dict[str, Any]:
        if credentials is None or not credentials.username or not credentials.password:
            raise CloudError(401, "AuthFailure", "credentials required")
        secret_hash = _secret_hash(credentials.password)
        async with state["pool"].acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT secret_hash FROM accounts WHERE api_key = $1 FOR UPDATE",
                credentials.username,
            )
            if row is not None and not hmac.compare_digest(row["secret_hash"], secret_hash):
                raise CloudError(401, "AuthFailure", "unknown api key or wrong secret")
            await conn.execute(
                """INSERT INTO accounts (api_key, secret_hash, settings) VALUES ($1, $2, $3)
                   ON CONFLICT (api_key) DO UPDATE SET settings = EXCLUDED.settings""",
                credentials.username,
                secret_hash,
                settings.model_dump_json(),
            )
        # The stored hash is this one: the account is new, or the secret matched.
        accounts.put(credentials.username, AccountEntry(secret_hash, settings))
        return {"api_key": credentials.username}

    @app.get("/v1/sizes")
    async def sizes(acct: Account) -> list[dict[str, Any]]:
        return [s.model_dump() for s in acct[1].sizes]

    @app.get("/v1/images")
    async def images(acct: Account) -> list[dict[str, Any]]:
        return [i.model_dump() for i in acct[1].images]

    @app.get("/v1/regions")
    async def regions(acct: Account) -> list[str]:
        return list(acct[1].regions)

    @app.get("/v1/nodes", response_class=Response)
    async def list_nodes(acct: Account, tag: str | None = None) -> Response:
        """All nodes, or (``tag=key=value``) those tagged so, terminated ones for as long as the
        account's ``terminated_retention``."""
        key, settings = acct
        now = clock()
        condition, args = "TRUE", []
        if tag is not None:
            condition, value = _tag_filter(tag)
            args = [value]
        # Nodes stored as terminated before the retention are gone already; those that became
        # terminated since are left out by nodes_json.
        rows = await state["pool"].fetch(
            f"""SELECT {NODE_COLUMNS} FROM nodes
                WHERE api_key = $1 AND NOT (state = 'terminated' AND since < $2) AND {condition}
                ORDER BY created_at, id""",
            key,
            now - timedelta(seconds=settings.terminated_retention),
            *args,
        )
        return _json(nodes_json(rows, settings, now))

    @app.post("/v1/nodes", status_code=201, response_class=Response)
    async def create_node(body: NewNode, acct: Caller) -> Response:
        key, settings = acct
        now = clock()
        size = next((s for s in settings.sizes if s.id == body.size), None)
        if size is None:
            raise CloudError(400, "InvalidSize", f"no size {body.size}")
        if not any(i.id == body.image for i in settings.images):
            raise CloudError(400, "InvalidImage", f"no image {body.image}")
        region = body.region or settings.regions[0]
        if region not in settings.regions:
            raise CloudError(400, "InvalidRegion", f"no region {region}")
        if settings.create_failure_rate and random.random() < settings.create_failure_rate:
            raise CloudError(503, "ServiceUnavailable", "simulated outage: create failed")
        async with state["pool"].acquire() as conn, conn.transaction():
            # One create at a time per account, so capacity holds under concurrency.
            await conn.execute("SELECT 1 FROM accounts WHERE api_key = $1 FOR UPDATE", key)
            if settings.capacity is not None:
                rows = await conn.fetch(
                    """SELECT id, state, since FROM nodes
                       WHERE api_key = $1 AND state NOT IN ('terminated', 'error')""",
                    key,
                )
                live = sum(1 for r in rows if _state_now(r, settings, now)[0] in LIVE)
                if live >= settings.capacity:
                    raise CloudError(
                        409,
                        "InsufficientCapacity",
                        f"account capacity of {settings.capacity} nodes reached",
                    )
            node_id = "sim-" + secrets.token_hex(8)
            row = await conn.fetchrow(
                """INSERT INTO nodes (id, api_key, name, size_id, image_id, region, tags, state,
                                      since, created_at)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8, $8)
                   RETURNING """
                + NODE_COLUMNS,
                node_id,
                key,
                body.name,
                body.size,
                body.image,
                region,
                json.dumps(body.tags),
                now,
            )
        if settings.api_latency:
            await asyncio.sleep(settings.api_latency)
        return _json(node_json(row, settings, now), status_code=201)

    async def _act(key: str, settings: AccountSettings, node_id: str, action: str) -> Response:
        now = clock()
        async with state["pool"].acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT id, state, since FROM nodes WHERE api_key = $1 AND id = $2 FOR UPDATE",
                key,
                node_id,
            )
            if row is None:
                raise CloudError(404, "InvalidInstanceID.NotFound", f"no node {node_id}")
            current, _ = _state_now(row, settings, now)
            if action == "kill":
                entered = "terminated"
            else:
                try:
                    entered = next_state(action, current)
                except IncorrectState as exc:
                    raise CloudError(409, "IncorrectInstanceState", str(exc)) from None
            row = await conn.fetchrow(
                "UPDATE nodes SET state = $3, since = $4 WHERE api_key = $1 AND id = $2"
                " RETURNING " + NODE_COLUMNS,
                key,
                node_id,
                entered,
                now,
            )
        return _json(node_json(row, settings, now))

    @app.post("/v1/nodes/{node_id}/{action}", response_class=Response)
    async def act(node_id: str, action: str, acct: Account) -> Response:
        if action not in ("stop", "start", "reboot", "kill"):
            raise CloudError(404, "UnknownAction", f"no action {action}")
        return await _act(acct[0], acct[1], node_id, action)

    @app.delete("/v1/nodes/{node_id}", response_class=Response)
    async def destroy(node_id: str, acct: Account) -> Response:
        return await _act(acct[0], acct[1], node_id, "destroy")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"code": "Error", "message": str(exc.detail)}, exc.status_code)

    return app
