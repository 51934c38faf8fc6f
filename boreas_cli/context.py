"""What every command needs: the settings (with the --url given to `boreas`) and an API client."""

from __future__ import annotations

from boreas_cli import config
from boreas_cli.client import Api
from boreas_cli.errors import not_logged_in

_url_option: list[str | None] = [None]


def use_url(url: str | None) -> None:
    _url_option[0] = url


def settings() -> config.Settings:
    return config.settings(_url_option[0])


def api(*, needs_token: bool = True) -> Api:
    return Api(settings(), needs_token=needs_token)


def logged_in() -> config.Settings:
    """The settings, when they hold a token."""
    found = settings()
    if not found.token:
        raise not_logged_in()
    return found
