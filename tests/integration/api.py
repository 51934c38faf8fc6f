"""The gateway in-process (lifespan and all) on the real bus and database, and API helpers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
from fastapi import FastAPI

from services.gateway.app import create_app
from shared.config import GatewaySettings
from shared.credentials import new_key_text
from shared.runtime import Clock, utcnow
from tests.integration.support import paced

ADMIN_PASSWORD = "admin-password-for-tests"


# Where the tests' gateways check the credentials of simulated accounts; set for the session by
# the credential_checks fixture.
CREDENTIAL_CLOUD: str | None = None


def gateway_settings(amqp_url: str, database_url: str, **overrides: object) -> GatewaySettings:
    values: dict[str, object] = {
        "admin_password": ADMIN_PASSWORD,
        "secret_key": SESSION_KEY,
        "token_requests_per_minute": 10_000,
        "login_failures_per_minute": 10_000,
        # Tests set the limits they are about; a default one would stop launches elsewhere.
        "default_quota_instances": None,
        "default_quota_cpus": None,
        "default_quota_memory_mb": None,
    }
    if CREDENTIAL_CLOUD is not None:
        values["simulator_url"] = CREDENTIAL_CLOUD
    values.update(overrides)
    return paced(GatewaySettings, amqp_url, database_url, **values)


SESSION_KEY = new_key_text()


@dataclass
class Api:
    app: FastAPI
    client: httpx.AsyncClient

    async def login(self, username: str, password: str) -> dict[str, str]:
        response = await self.client.post(
            "/v1/tokens", json={"username": username, "password": password}
        )
        assert response.status_code == 201, response.text
        return {"Authorization": f"Bearer {response.json()['token']}"}

    async def admin(self) -> dict[str, str]:
        return await self.login("admin", ADMIN_PASSWORD)

    async def new_user(self, prefix: str = "user", role: str = "user") -> tuple[str, dict]:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        password = f"{name}-password"
        response = await self.client.post(
            "/v1/users",
            json={"username": name, "password": password, "role": role},
            headers=await self.admin(),
        )
        assert response.status_code == 201, response.text
        return name, await self.login(name, password)

    async def register_account(self, body: dict) -> dict:
        """POST /v1/provider-accounts as the admin (``body`` as it takes it): the account."""
        response = await self.client.post(
            "/v1/provider-accounts", json=body, headers=await self.admin()
        )
        assert response.status_code == 201, response.text
        return response.json()

    async def new_account(self, grants: list[str], *, secret: str = "s3cret") -> dict:
        """An account of the simulated cloud (the gateway checks its credentials there: see
        the credential_checks fixture)."""
        return await self.register_account(
            {
                "name": f"acct-{uuid.uuid4().hex[:8]}",
                "provider": "simulator",
                "credentials": {"api_key": f"key-{uuid.uuid4().hex}", "api_secret": secret},
                "config": {"regions": ["north", "south"]},
                "grants": grants,
            }
        )

    async def launch(self, headers: dict, **overrides: object) -> httpx.Response:
        body = {"name": "web-1", "image": "debian-12", "cpus": 2, "memory_mb": 2048}
        body.update(overrides)
        return await self.client.post("/v1/instances", json=body, headers=headers)

    async def deploy(
        self, headers: dict, template: dict, *, name: str = "shop", **fields: object
    ) -> httpx.Response:
        """POST /v1/deployments (JSON) of ``template`` named ``name``; ``fields``: the rest of
        the body (``parameters``)."""
        body = {"name": name, "template": template, **fields}
        return await self.client.post("/v1/deployments", json=body, headers=headers)


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@asynccontextmanager
async def running_gateway(
    settings: GatewaySettings, client_address: str = "127.0.0.1", clock: Clock = utcnow
) -> AsyncIterator[Api]:
    app = create_app(settings, clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=(client_address, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield Api(app, client)
