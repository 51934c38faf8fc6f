"""Deployment templates as files: read as JSON or YAML, the request body built with the name and
parameters given on the command line, and sent the way it was written (JSON as JSON, YAML as
YAML with ``Content-Type: application/yaml``). The gateway is the one that checks the template."""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml  # PyYAML: a declared dependency

from boreas_cli.errors import CliError, ExitCode

YAML = "application/yaml"
JSON = "application/json"
# A deployment's name, as the gateway takes it (it also bounds the length).
NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
PARAMETER = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.DOTALL)


class _Dumper(yaml.SafeDumper):
    """YAML without anchors: the gateway refuses aliases (``*name``), so a part the file wrote
    once and used twice is written out twice."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


@dataclass(frozen=True)
class Request:
    """What POST /v1/deployments is sent: its body and content type."""

    body: dict[str, Any]
    content_type: str

    def content(self) -> bytes:
        if self.content_type == YAML:
            written = yaml.dump(self.body, Dumper=_Dumper, sort_keys=False, allow_unicode=True)
            return written.encode()
        return json.dumps(self.body, ensure_ascii=False).encode()


def read_text(file: Path) -> tuple[str, str]:
    """The text of ``file`` ('-': stdin), and what to call it in messages."""
    if str(file) == "-":
        return sys.stdin.read(), "stdin"
    try:
        return file.read_text(), str(file)
    except OSError as error:
        raise CliError(f"Cannot read {file}: {error.strerror}", ExitCode.USAGE) from None


def document_of(raw: str, where: str) -> tuple[dict[str, Any], str]:
    """The object written in ``raw`` and its content type: JSON if it is JSON, else YAML."""
    try:
        parsed, content_type = json.loads(raw), JSON
    except ValueError:
        try:
            parsed, content_type = yaml.safe_load(raw), YAML
        except yaml.YAMLError as error:
            raise CliError(f"{where} is neither JSON nor YAML: {error}", ExitCode.USAGE) from None
    if not isinstance(parsed, dict):
        raise CliError(
            f"{where} must hold a template: an object with `groups` (docs/deployments.md).",
            ExitCode.USAGE,
        )
    return parsed, content_type


def parameters_of(given: list[str]) -> dict[str, str]:
    """``--param name=value`` options as a mapping (the last of a name wins)."""
    parameters: dict[str, str] = {}
    for item in given:
        matched = PARAMETER.match(item)
        if matched is None:
            raise CliError(
                f"--param: NAME=VALUE, NAME being letters, digits and _, not {item!r}.",
                ExitCode.USAGE,
            )
        parameters[matched.group(1)] = matched.group(2)
    return parameters


def request_of(file: Path, name: str | None, parameters: dict[str, str]) -> tuple[Request, str]:
    """The request for the template in ``file`` (or a whole request body, with ``template``),
    named ``name`` (default: the request's, else the file's name without its extension); the
    parameters given add to, and win over, the file's."""
    raw, where = read_text(file)
    document, content_type = document_of(raw, where)
    if "template" in document:
        body = dict(document)
    else:
        body = {"template": document}
    name = name or body.get("name") or _name_of(file)
    if not name:
        raise CliError(f"--name: a deployment needs a name ({where} gives none).", ExitCode.USAGE)
    written = body.get("parameters") or {}
    if not isinstance(written, dict):
        raise CliError(f"{where}: `parameters` must be an object of NAME: VALUE.", ExitCode.USAGE)
    merged = {**written, **parameters}
    body = {"name": name, "template": body["template"]}
    if merged:
        body["parameters"] = merged
    return Request(body, content_type), where


def _name_of(file: Path) -> str | None:
    """The file's name without its extension, when it is a name a deployment can have."""
    if str(file) == "-":
        return None
    stem = file.name.split(".", 1)[0].lower().replace("_", "-")
    return stem if NAME.match(stem) else None
