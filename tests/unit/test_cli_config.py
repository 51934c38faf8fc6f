"""Where the boreas command finds its gateway and token: --url, then the environment, then the
config file; a stored token only ever goes to the gateway that issued it."""

from __future__ import annotations

import pytest

from boreas_cli import config

STORED = {"url": "http://stored.test:8080", "username": "alice", "token": "stored-token"}


@pytest.fixture(autouse=True)
def stored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "read_file", lambda path=None: dict(STORED))
    monkeypatch.delenv("BOREAS_URL", raising=False)
    monkeypatch.delenv("BOREAS_TOKEN", raising=False)


def test_the_config_file_is_used_when_nothing_else_is_said() -> None:
    found = config.settings()
    assert (found.url, found.token, found.username) == (STORED["url"], "stored-token", "alice")


def test_the_environment_wins_over_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOREAS_URL", "http://stored.test:8080/")
    monkeypatch.setenv("BOREAS_TOKEN", "env-token")
    found = config.settings()
    assert (found.url, found.token, found.token_from_env) == (STORED["url"], "env-token", True)
    assert found.username is None  # the file's username belongs to the file's token


def test_the_url_option_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOREAS_URL", "http://env.test")
    assert config.settings("http://option.test").url == "http://option.test"


def test_a_stored_token_is_not_sent_to_another_gateway(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOREAS_URL", "http://elsewhere.test")
    assert config.settings().token is None


def test_xdg_config_home_moves_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", "/somewhere/config")
    assert str(config.config_path()) == "/somewhere/config/boreas/config.toml"
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/is/ignored")
    assert config.config_path().parts[-3:] == (".config", "boreas", "config.toml")
