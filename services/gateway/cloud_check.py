"""Asking a provider account's cloud whether it takes the account's credentials, before Boreas
stores them: a refused account is a 422 for the admin now, not a failed launch for a user later."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from shared.clouds.registry import build_driver
from shared.redaction import redact_values_in

# A cloud that has not answered by then is reported as not answering.
CHECK_SECONDS = 20.0
MAX_MESSAGE = 500


async def cloud_refusal(
    provider: str,
    credentials: Mapping[str, str],
    config: Mapping[str, Any],
    *,
    simulator_url: str | None,
    timeout: float = CHECK_SECONDS,
) -> str | None:
    """None if the cloud accepts the credentials (a node listing succeeds); else why not, in the
    provider's words, with the credentials' values redacted."""

    def list_nodes() -> None:
        driver = build_driver(
            provider, dict(credentials), dict(config), simulator_url=simulator_url
        )
        driver.list_nodes()

    try:
        await asyncio.wait_for(asyncio.to_thread(list_nodes), timeout)
    except TimeoutError:
        return f"the cloud did not answer within {timeout:.0f} s"
    except Exception as error:  # whatever the driver raises is the cloud's answer
        message = f"{type(error).__name__}: {error}"
        return redact_values_in(message, credentials.values())[:MAX_MESSAGE]
    return None
