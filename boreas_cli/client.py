"""The HTTP API, synchronously: each call returns the parsed JSON or raises a CliError that says
what the server said (its problem's title and detail) with the matching exit code."""

from __future__ import annotations

from typing import Any

import httpx

from boreas_cli.config import Settings
from boreas_cli.errors import (
    CliError,
    ExitCode,
    exit_code_for,
    not_logged_in,
    problem_message,
)

TIMEOUT = httpx.Timeout(30.0, connect=5.0)
USER_AGENT = "boreas-cli"


def auth_headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def failure_of(response: httpx.Response) -> CliError:
    try:
        body = response.json()
    except ValueError:
        body = None
    message = problem_message(response.status_code, body, response.reason_phrase)
    return CliError(message, exit_code_for(response.status_code))


def unreachable(url: str, error: httpx.TransportError) -> CliError:
    return CliError(
        f"Cannot reach the Boreas gateway at {url}: {error or type(error).__name__}. "
        "Is it running? (--url, BOREAS_URL or the config file say where it is.)",
        ExitCode.UNREACHABLE,
    )


class Api:
    def __init__(
        self,
        settings: Settings,
        *,
        transport: httpx.BaseTransport | None = None,
        needs_token: bool = True,
    ) -> None:
        if needs_token and not settings.token:
            raise not_logged_in()
        self.settings = settings
        self.http = httpx.Client(
            base_url=settings.url,
            headers={"User-Agent": USER_AGENT, **auth_headers(settings.token)},
            timeout=TIMEOUT,
            transport=transport,
        )

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise unreachable(self.settings.url, error) from None
        if response.is_error:
            raise failure_of(response)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise CliError(
                f"The gateway at {self.settings.url} answered {path} with something else than "
                "JSON; is that URL a Boreas gateway?"
            ) from None

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        return self.request("POST", path, json=body, **kwargs)

    def put(self, path: str, body: Any) -> Any:
        return self.request("PUT", path, json=body)

    def patch(self, path: str, body: Any) -> Any:
        return self.request("PATCH", path, json=body)

    def delete(self, path: str, **params: Any) -> Any:
        return self.request(
            "DELETE", path, params={k: v for k, v in params.items() if v is not None}
        )

    def pages(self, path: str, limit: int | None = None, **params: Any) -> list[dict[str, Any]]:
        """Items of a paginated list, following ``next_cursor`` (up to ``limit`` items)."""
        items: list[dict[str, Any]] = []
        cursor = None
        while True:
            wanted = 100 if limit is None else min(100, limit - len(items))
            page = self.get(path, limit=wanted, cursor=cursor, **params)
            items.extend(page["items"])
            cursor = page.get("next_cursor")
            if not cursor or (limit is not None and len(items) >= limit):
                return items

    def close(self) -> None:
        self.http.close()
