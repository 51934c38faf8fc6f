"""Drivers for provider accounts, opened on demand and cached per account revision.

Credentials are opened in memory (never stored in clear) and the driver kept while the account's
revision stays the same; a new revision (grants, config or key rotation) builds a new one.
"""

from __future__ import annotations

import asyncio
from typing import Any

from libcloud.compute.base import NodeDriver

from shared.clouds.registry import build_driver
from shared.credentials import CredentialCipher, SealedCredentials


class CloudConnections:
    def __init__(self, cipher: CredentialCipher, *, simulator_url: str | None = None) -> None:
        self._cipher = cipher
        self._simulator_url = simulator_url
        self._drivers: dict[str, tuple[int, NodeDriver]] = {}

    async def driver(self, account: dict[str, Any]) -> NodeDriver:
        cached = self._drivers.get(account["id"])
        if cached and cached[0] == account["revision"]:
            return cached[1]
        sealed = SealedCredentials.model_validate(account["credentials"])
        credentials = self._cipher.open(account["id"], sealed)
        driver = await asyncio.to_thread(
            build_driver,
            account["provider"],
            credentials,
            account["config"],
            simulator_url=self._simulator_url,
        )
        self._drivers[account["id"]] = (account["revision"], driver)
        return driver

    def forget(self, account_id: str) -> None:
        self._drivers.pop(account_id, None)
