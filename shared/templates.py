"""Deployment templates, pure: their JSON Schema, parameters, and the checks a schema cannot make.

A template names groups of identical instances and the order they start in::

    {"groups": [{"name": "db", "count": 1, "image": "postgres-{{ version }}", "cpus": 2,
                 "memory_mb": 4096},
                {"name": "web", "count": 3, "image": "nginx", "cpus": 1, "memory_mb": 1024,
                 "spread": "accounts", "after": ["db"], "lease_seconds": 86400}],
     "on_failure": "rollback"}

:func:`parse` substitutes ``{{ name }}`` in string fields from the request's parameters, checks
the result against :data:`SCHEMA` (published as ``docs/deployment-template.schema.json``), then
checks what a schema cannot: group names unique, every ``after`` names a group, no cycles.
Every problem found is reported at once, each at the JSON Pointer of the field it is about.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import jsonschema

MAX_GROUPS = 20
MAX_COUNT = 100  # instances per group
GROUP_NAME = r"^[a-z][a-z0-9-]{0,29}$"

_PLACEMENT = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "provider": {"type": "string", "pattern": r"^[a-z][a-z0-9_]{1,31}$"},
        "account": {"type": "string", "minLength": 1, "maxLength": 128},
        "region": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"},
    },
}

_GROUP = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "count", "image", "cpus", "memory_mb"],
    "properties": {
        "name": {
            "type": "string",
            "pattern": GROUP_NAME,
            "description": "unique in the template; instances are named <deployment>-<group>-<n>",
        },
        "count": {"type": "integer", "minimum": 1, "maximum": MAX_COUNT},
        "image": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$"},
        "cpus": {"type": "integer", "minimum": 1, "maximum": 256},
        "memory_mb": {"type": "integer", "minimum": 64, "maximum": 4 * 1024 * 1024},
        "placement": _PLACEMENT,
        "spread": {
            "enum": ["accounts", "regions"],
            "description": "no two instances of the group on the same account (or region)",
        },
        "after": {
            "type": "array",
            "items": {"type": "string", "pattern": GROUP_NAME},
            "uniqueItems": True,
            "maxItems": MAX_GROUPS,
            "description": "groups whose instances must all be running before this one starts",
        },
        "lease_seconds": {"type": "integer", "minimum": 60},
    },
}

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "deployment-template.schema.json",
    "title": "Boreas deployment template",
    "description": (
        "Groups of instances launched, admitted and deleted as one. String fields may hold "
        "{{ name }}, replaced by the deployment request's parameters."
    ),
    "type": "object",
    "additionalProperties": False,
    "required": ["groups"],
    "properties": {
        "groups": {"type": "array", "minItems": 1, "maxItems": MAX_GROUPS, "items": _GROUP},
        "on_failure": {
            "enum": ["rollback", "keep"],
            "default": "rollback",
            "description": (
                "rollback: terminate what was created and end failed; keep: end degraded, "
                "naming the failed instances"
            ),
        },
    },
}

_VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
_PARAMETER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_PARAMETER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


@dataclass(frozen=True)
class Problem:
    pointer: str  # RFC 6901, from the template's root ("" is the template itself)
    message: str


class TemplateError(ValueError):
    """The template cannot be used; ``problems`` says where and why, every one found."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(f"{p.pointer or '/'}: {p.message}" for p in self.problems))


@dataclass(frozen=True)
class PlacementSpec:
    provider: str | None = None
    account: str | None = None
    region: str | None = None


@dataclass(frozen=True)
class Group:
    name: str
    count: int
    image: str
    cpus: int
    memory_mb: int
    placement: PlacementSpec = field(default_factory=PlacementSpec)
    spread: Literal["accounts", "regions"] | None = None
    after: tuple[str, ...] = ()
    lease_seconds: int | None = None


@dataclass(frozen=True)
class Template:
    groups: tuple[Group, ...]
    on_failure: Literal["rollback", "keep"] = "rollback"

    def group(self, name: str) -> Group:
        return next(g for g in self.groups if g.name == name)

    def start_order(self) -> list[list[str]]:
        """The groups in waves: each wave's groups need only groups of earlier waves."""
        waves: list[list[str]] = []
        placed: set[str] = set()
        while len(placed) < len(self.groups):
            wave = [g.name for g in self.groups if g.name not in placed and placed >= set(g.after)]
            waves.append(wave)
            placed.update(wave)
        return waves


def pointer(*parts: str | int) -> str:
    """An RFC 6901 JSON Pointer to ``parts`` (``~`` and ``/`` escaped)."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def parse(document: Any, parameters: Mapping[str, Any] | None = None) -> Template:
    """The template ``document`` with ``parameters`` substituted, or TemplateError naming
    every problem. Parameters are refused (at ``/parameters/<name>`` of the request, given
    here as ``parameters/<name>``) when they are not scalars or not used."""
    parameters = dict(parameters or {})
    problems = _parameter_problems(parameters)
    used: set[str] = set()
    substituted = _substitute(document, parameters, used, (), problems)
    problems += [
        Problem("/parameters" + pointer(name), "not used by the template")
        for name in sorted(set(parameters) - used)
        if _PARAMETER_NAME.match(name)
    ]
    unfilled = {p.pointer for p in problems}
    problems += [
        problem
        for error in sorted(_VALIDATOR.iter_errors(substituted), key=lambda e: list(e.path))
        for problem in _schema_problems(error)
        if problem.pointer not in unfilled
    ]
    if problems:
        raise TemplateError(problems)
    template = _build(substituted)
    graph_problems = _graph_problems(template)
    if graph_problems:
        raise TemplateError(graph_problems)
    return template


def _parameter_problems(parameters: Mapping[str, Any]) -> list[Problem]:
    problems = []
    for name, value in parameters.items():
        where = "/parameters" + pointer(name)
        if not _PARAMETER_NAME.match(name):
            problems.append(Problem(where, "a parameter name is letters, digits and _"))
        elif isinstance(value, bool) or not isinstance(value, str | int | float):
            problems.append(Problem(where, "a parameter's value is a string or a number"))
    return problems


def _substitute(
    node: Any,
    parameters: Mapping[str, Any],
    used: set[str],
    at: tuple[str | int, ...],
    problems: list[Problem],
) -> Any:
    if isinstance(node, str):
        return _fill(node, parameters, used, at, problems)
    if isinstance(node, list):
        return [_substitute(v, parameters, used, (*at, i), problems) for i, v in enumerate(node)]
    if isinstance(node, dict):
        return {k: _substitute(v, parameters, used, (*at, k), problems) for k, v in node.items()}
    return node


def _fill(
    text: str,
    parameters: Mapping[str, Any],
    used: set[str],
    at: tuple[str | int, ...],
    problems: list[Problem],
) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in parameters:
            problems.append(Problem(pointer(*at), f"parameter {name!r} is not given"))
            return match.group(0)
        used.add(name)
        return str(parameters[name])

    return _PARAMETER.sub(value, text)


def _schema_problems(error: jsonschema.ValidationError) -> list[Problem]:
    """A schema error as problems: an unknown field at its own pointer, the rest as said."""
    where = tuple(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = error.schema.get("properties", {})
        return [
            Problem(pointer(*where, k), "unknown field") for k in error.instance if k not in known
        ]
    return [Problem(pointer(*where), error.message)]


def _build(document: Mapping[str, Any]) -> Template:
    return Template(
        groups=tuple(
            Group(
                name=g["name"],
                count=g["count"],
                image=g["image"],
                cpus=g["cpus"],
                memory_mb=g["memory_mb"],
                placement=PlacementSpec(**g.get("placement", {})),
                spread=g.get("spread"),
                after=tuple(g.get("after", ())),
                lease_seconds=g.get("lease_seconds"),
            )
            for g in document["groups"]
        ),
        on_failure=document.get("on_failure", "rollback"),
    )


def _graph_problems(template: Template) -> list[Problem]:
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for index, group in enumerate(template.groups):
        if group.name in seen:
            problems.append(
                Problem(
                    pointer("groups", index, "name"),
                    f"group {group.name!r} is defined twice (first at "
                    f"{pointer('groups', seen[group.name])})",
                )
            )
        seen.setdefault(group.name, index)
    for index, group in enumerate(template.groups):
        for position, needed in enumerate(group.after):
            if needed not in seen:
                problems.append(
                    Problem(
                        pointer("groups", index, "after", position), f"no group named {needed!r}"
                    )
                )
            elif needed == group.name:
                problems.append(
                    Problem(
                        pointer("groups", index, "after", position),
                        f"group {group.name!r} cannot wait for itself",
                    )
                )
    if problems:
        return problems
    cycle = _cycle(template)
    if cycle is None:
        return []
    first = template.groups[seen[cycle[0]]]
    return [
        Problem(
            pointer("groups", seen[cycle[0]], "after", first.after.index(cycle[1])),
            "these groups wait for each other: " + " → ".join([*cycle, cycle[0]]),
        )
    ]


def _cycle(template: Template) -> list[str] | None:
    """A cycle of ``after``, as the groups in it (each waiting for the next), or None."""
    after = {g.name: g.after for g in template.groups}
    state: dict[str, str] = {}  # "open" while on the path, "done" once explored

    def visit(name: str, path: list[str]) -> list[str] | None:
        state[name] = "open"
        path.append(name)
        for needed in after[name]:
            if state.get(needed) == "open":
                return path[path.index(needed) :]
            if needed not in state:
                found = visit(needed, path)
                if found is not None:
                    return found
        path.pop()
        state[name] = "done"
        return None

    for group in template.groups:
        if group.name not in state:
            found = visit(group.name, [])
            if found is not None:
                return found
    return None


if __name__ == "__main__":
    import json

    print(json.dumps(SCHEMA, indent=2))
