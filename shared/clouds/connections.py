"""Calls to provider accounts: drivers opened on demand, within each account's call budget.

Credentials are opened in memory (never stored in clear) when a driver is built. libcloud drivers
are not safe to share between threads, so each account keeps a small pool of drivers, one per
call in flight, rebuilt when the account's revision changes (grants, config or key rotation).
Calls run on a thread pool of their own (libcloud is synchronous), so slow clouds never starve
the event loop's default executor, and each account's :class:`~shared.clouds.budget.CallBudget`
caps what Boreas asks of it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import requests
from libcloud.compute.base import NodeDriver

from shared.accounts import Account
from shared.clouds.budget import CallBudget, is_throttle
from shared.clouds.registry import build_driver
from shared.credentials import CredentialCipher
from shared.metrics import CLOUD_CALLS

T = TypeVar("T")


def connection_lost(error: BaseException) -> bool:
    """Whether the call never got an answer: the connection failed or was closed under it (so a
    create may or may not have happened)."""
    return isinstance(error, requests.exceptions.ConnectionError | ConnectionError | TimeoutError)


class CloudThrottled(Exception):
    """The cloud refused a call as one too many: try later or elsewhere, it is no failure."""


@dataclass
class _Account:
    revision: int
    budget: CallBudget
    idle: list[NodeDriver] = field(default_factory=list)


class CloudConnections:
    def __init__(
        self,
        cipher: CredentialCipher,
        *,
        simulator_url: str | None = None,
        threads: int = 64,
        calls_in_flight: int = 16,
        calls_per_second: float = 50.0,
    ) -> None:
        self._cipher = cipher
        self._simulator_url = simulator_url
        self._executor = concurrent.futures.ThreadPoolExecutor(threads, "cloud-call")
        self._calls_in_flight = calls_in_flight
        self._calls_per_second = calls_per_second
        self._accounts: dict[str, _Account] = {}

    def budget(self, account: Account) -> CallBudget:
        """The account's budget; an account's config may set ``api_concurrency`` and
        ``api_rate`` (calls per second) below or above the service's defaults."""
        known = self._accounts.get(account.id)
        if known is None or known.revision != account.revision:
            config = account.config
            known = _Account(
                account.revision,
                CallBudget(
                    int(config.get("api_concurrency") or self._calls_in_flight),
                    float(config.get("api_rate") or self._calls_per_second),
                ),
            )
            self._accounts[account.id] = known
        return known.budget

    async def call(
        self,
        account: Account,
        operation: Callable[[NodeDriver], T],
        *,
        read_only: bool = False,
    ) -> T:
        """Run ``operation(driver)`` on a thread, within the account's budget. Raises
        :class:`CloudThrottled` when the cloud says too many; other errors as they come. A
        ``read_only`` operation that loses its connection (a kept-alive connection the cloud had
        closed) is tried once more on a fresh one."""
        budget = self.budget(account)
        line = self._accounts[account.id]
        loop = asyncio.get_running_loop()
        async with budget.call():
            for attempt in (1, 2):
                driver = line.idle.pop() if line.idle else None
                broken = False
                try:
                    if driver is None:
                        driver = await loop.run_in_executor(self._executor, self._build, account)
                    result = await loop.run_in_executor(self._executor, operation, driver)
                except Exception as error:
                    if is_throttle(error):
                        CLOUD_CALLS.labels(account.provider, "throttled").inc()
                        pause = budget.throttled()
                        raise CloudThrottled(f"{error} (calls paused {pause:g} s)") from error
                    CLOUD_CALLS.labels(account.provider, "error").inc()
                    broken = connection_lost(error)
                    if broken and read_only and attempt == 1:
                        continue
                    raise
                finally:
                    if not broken:
                        self._put_back(account.id, line, driver)
                CLOUD_CALLS.labels(account.provider, "ok").inc()
                budget.succeeded()
                return result
        raise AssertionError("unreachable")

    def _put_back(self, account_id: str, line: _Account, driver: NodeDriver | None) -> None:
        """A working driver serves the account's next call, unless the account changed
        meanwhile (a new revision has a line of its own)."""
        if driver is not None and self._accounts.get(account_id) is line:
            line.idle.append(driver)

    def _build(self, account: Account) -> NodeDriver:
        credentials = self._cipher.open(account.id, account.credentials)
        return build_driver(
            account.provider,
            credentials,
            account.config,
            simulator_url=self._simulator_url,
        )

    def forget(self, account_id: str) -> None:
        self._accounts.pop(account_id, None)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
