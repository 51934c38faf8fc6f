"""Where the gateway is and the token to use: ``$XDG_CONFIG_HOME/boreas/config.toml`` (default
``~/.config/boreas/config.toml``), overridden by BOREAS_URL and BOREAS_TOKEN."""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from boreas_cli.errors import CliError

DEFAULT_URL = "http://127.0.0.1:8080"
KEYS = ("url", "username", "token", "expires_at")


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME", "")
    # The XDG spec: a relative value is invalid and ignored.
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".config"
    return root / "boreas" / "config.toml"


def read_file(path: Path | None = None) -> dict[str, str]:
    path = path or config_path()
    try:
        with path.open("rb") as f:
            loaded = tomllib.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as unreadable:
        raise CliError(f"Cannot read {path}: {unreadable}") from None
    return {key: str(value) for key, value in loaded.items() if isinstance(value, str)}


def write_file(values: dict[str, str], path: Path | None = None) -> Path:
    """Replace the file with ``values``, readable by its owner only: it holds a token."""
    path = path or config_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # JSON strings without ASCII escapes are TOML basic strings.
    text = "".join(
        f"{key} = {json.dumps(values[key], ensure_ascii=False)}\n" for key in KEYS if key in values
    )
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(temporary, 0o600)  # in case an older file of that name had looser bits
    os.replace(temporary, path)
    return path


@dataclass(frozen=True)
class Settings:
    url: str
    token: str | None
    username: str | None
    token_from_env: bool


def settings(url_option: str | None = None) -> Settings:
    """The command line's --url, then the environment, then the file, then the default."""
    stored = read_file()
    url = url_option or os.environ.get("BOREAS_URL") or stored.get("url") or DEFAULT_URL
    env_token = os.environ.get("BOREAS_TOKEN")
    # A token belongs to the gateway that issued it: not sent to another one given by --url.
    same_gateway = stored.get("url", DEFAULT_URL).rstrip("/") == url.rstrip("/")
    token = env_token or (stored.get("token") if same_gateway else None)
    return Settings(
        url=url.rstrip("/"),
        token=token,
        username=None if env_token else stored.get("username"),
        token_from_env=bool(env_token),
    )
