"""The simulated cloud's HTTP API (``python -m shared.clouds.simulator``), state in PostgreSQL.

Callers authenticate with HTTP Basic (api key, api secret). ``PUT /v1/account`` creates the
account on first use (remembering a hash of the secret) or updates its settings; every other call
needs the same secret. Errors are JSON ``{"code", "message"}`` with the status a cloud would use.
"""

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
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from pydantic import BaseModel, Field

from shared.clouds.simulator.model import (
    LIVE,
    AccountSettings,
    IncorrectState,
    effective_state,
    next_state,
)
from shared.db import create_pool, load_migrations, migrate
from shared.runtime import Clock, utcnow

SCHEMA = "simulator"
MIGRATIONS = Path(__file__).with_name("migrations")


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


def _node_view(row: asyncpg.Record, settings: AccountSettings, now: datetime) -> dict[str, Any]:
    state, since = _state_now(row, settings, now)
    return {
        "id": row["id"],
        "name": row["name"],
        "state": state,
        "since": since.isoformat(),
        "size": row["size_id"],
        "image": row["image_id"],
        "region": row["region"],
        "tags": json.loads(row["tags"]),
        "created_at": row["created_at"].isoformat(),
        "public_ips": [] if state in ("terminated", "error") else [_fake_ip(row["id"])],
    }


def _fake_ip(node_id: str) -> str:
    digest = hashlib.sha256(node_id.encode()).digest()
    return f"198.51.100.{digest[0] % 254 + 1}"  # TEST-NET-2, never routed


def create_simulator_app(database_url: str, *, clock: Clock = utcnow) -> FastAPI:
    state: dict[str, asyncpg.Pool] = {}

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

    async def account(
        credentials: Annotated[HTTPBasicCredentials | None, Depends(basic)],
    ) -> tuple[str, AccountSettings]:
        if credentials is None:
            raise CloudError(401, "AuthFailure", "credentials required")
        row = await state["pool"].fetchrow(
            "SELECT secret_hash, settings FROM accounts WHERE api_key = $1", credentials.username
        )
        if row is None or not hmac.compare_digest(
            row["secret_hash"], _secret_hash(credentials.password)
        ):
            raise CloudError(401, "AuthFailure", "unknown api key or wrong secret")
        return credentials.username, AccountSettings.model_validate_json(row["settings"])

    Account = Annotated[tuple[str, AccountSettings], Depends(account)]

    @app.put("/v1/account")
    async def ensure_account(
        settings: AccountSettings,
        credentials: Annotated[HTTPBasicCredentials | None, Depends(basic)],
    ) -> dict[str, Any]:
        if credentials is None or not credentials.username or not credentials.password:
            raise CloudError(401, "AuthFailure", "credentials required")
        async with state["pool"].acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT secret_hash FROM accounts WHERE api_key = $1 FOR UPDATE",
                credentials.username,
            )
            if row is not None and not hmac.compare_digest(
                row["secret_hash"], _secret_hash(credentials.password)
            ):
                raise CloudError(401, "AuthFailure", "unknown api key or wrong secret")
            await conn.execute(
                """INSERT INTO accounts (api_key, secret_hash, settings) VALUES ($1, $2, $3)
                   ON CONFLICT (api_key) DO UPDATE SET settings = EXCLUDED.settings""",
                credentials.username,
                _secret_hash(credentials.password),
                settings.model_dump_json(),
            )
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

    @app.get("/v1/nodes")
    async def list_nodes(acct: Account) -> list[dict[str, Any]]:
        key, settings = acct
        now = clock()
        rows = await state["pool"].fetch(
            "SELECT * FROM nodes WHERE api_key = $1 ORDER BY created_at, id", key
        )
        views = [_node_view(r, settings, now) for r in rows]
        keep_after = now - timedelta(seconds=settings.terminated_retention)
        return [
            v
            for v in views
            if v["state"] != "terminated" or datetime.fromisoformat(v["since"]) >= keep_after
        ]

    @app.post("/v1/nodes", status_code=201)
    async def create_node(body: NewNode, acct: Account) -> dict[str, Any]:
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
                    "SELECT id, state, since FROM nodes WHERE api_key = $1", key
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
                   VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8, $8) RETURNING *""",
                node_id,
                key,
                body.name,
                body.size,
                body.image,
                region,
                json.dumps(body.tags),
                now,
            )
        return _node_view(row, settings, now)

    async def _act(key: str, settings: AccountSettings, node_id: str, action: str) -> dict:
        now = clock()
        async with state["pool"].acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT * FROM nodes WHERE api_key = $1 AND id = $2 FOR UPDATE", key, node_id
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
                """UPDATE nodes SET state = $3, since = $4
                   WHERE api_key = $1 AND id = $2 RETURNING *""",
                key,
                node_id,
                entered,
                now,
            )
        return _node_view(row, settings, now)

    @app.post("/v1/nodes/{node_id}/{action}")
    async def act(node_id: str, action: str, acct: Account) -> dict[str, Any]:
        if action not in ("stop", "start", "reboot", "kill"):
            raise CloudError(404, "UnknownAction", f"no action {action}")
        return await _act(acct[0], acct[1], node_id, action)

    @app.delete("/v1/nodes/{node_id}")
    async def destroy(node_id: str, acct: Account) -> dict[str, Any]:
        return await _act(acct[0], acct[1], node_id, "destroy")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"code": "Error", "message": str(exc.detail)}, exc.status_code)

    return app
