"""Deployment requests, pure: reading the body (JSON or YAML), the template it holds with every
problem at a JSON Pointer from the body's root, its members' names, and whether a group's
spread can be met by the accounts it may go to."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import yaml
from pydantic import ValidationError

from services.gateway.problems import FieldsRefused
from services.gateway.schemas import DeploymentRequest
from shared import eligibility, templates
from shared.templates import Group, Problem, Template

YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml")


class BodyUnreadable(ValueError):
    """The body is not JSON (or YAML, as its Content-Type says); the message says where."""


class _NoAliases(yaml.SafeLoader):
    """YAML without anchors' aliases: a few bytes of ``*a`` can stand for billions of nodes."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.MarkedYAMLError(
                None, None, "aliases (*name) are not accepted", event.start_mark
            )
        return super().compose_node(parent, index)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def read_document(raw: bytes, content_type: str | None) -> Any:
    """The body as data: YAML when ``content_type`` says so, JSON otherwise."""
    media = (content_type or "application/json").split(";")[0].strip().lower()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BodyUnreadable("The body is not UTF-8 text.") from None
    if media in YAML_TYPES:
        try:
            return yaml.load(text, Loader=_NoAliases)  # a SafeLoader: no Python objects
        except yaml.YAMLError as error:
            raise BodyUnreadable(f"The body is not valid YAML: {error}") from None
    try:
        return json.loads(text, parse_constant=_no_constant)
    except ValueError as error:
        raise BodyUnreadable(f"The body is not valid JSON: {error}") from None


def request_of(document: Any) -> DeploymentRequest:
    """The request the document holds; FieldsRefused at each field that is not as it must be."""
    if not isinstance(document, dict):
        raise FieldsRefused(
            [Problem("", 'the body is an object: {"name", "template", "parameters"?}')]
        )
    try:
        return DeploymentRequest.model_validate(document)
    except ValidationError as error:
        raise FieldsRefused(
            [
                Problem(
                    templates.pointer(*e["loc"]),
                    "unknown field" if e["type"] == "extra_forbidden" else e["msg"],
                )
                for e in error.errors()
            ]
        ) from None


def template_of(request: DeploymentRequest) -> Template:
    """The request's template with its parameters substituted; FieldsRefused naming every
    problem, at ``/template/...`` or ``/parameters/...``."""
    unusable = [
        Problem("/parameters" + templates.pointer(name), "a number must be finite")
        for name, value in request.parameters.items()
        if isinstance(value, float) and not math.isfinite(value)
    ]
    if unusable:
        raise FieldsRefused(unusable)
    try:
        return templates.parse(request.template, request.parameters)
    except templates.TemplateError as error:
        raise FieldsRefused([_from_root(p) for p in error.problems]) from None


def _from_root(problem: Problem) -> Problem:
    # templates.parse points at the template, except for the request's parameters (which it
    # gives as /parameters/<name>; an unknown field "parameters" in the template is /parameters).
    if problem.pointer.startswith("/parameters/"):
        return problem
    return Problem("/template" + problem.pointer, problem.message)


def document_of(template: Template) -> dict[str, Any]:
    """The template as a document (what events carry and the read model keeps): parsed again,
    it is the same template."""
    groups = []
    for group in template.groups:
        document: dict[str, Any] = {
            "name": group.name,
            "count": group.count,
            "image": group.image,
            "cpus": group.cpus,
            "memory_mb": group.memory_mb,
        }
        placement = {k: v for k, v in asdict(group.placement).items() if v is not None}
        if placement:
            document["placement"] = placement
        if group.spread is not None:
            document["spread"] = group.spread
        if group.after:
            document["after"] = list(group.after)
        if group.lease_seconds is not None:
            document["lease_seconds"] = group.lease_seconds
        groups.append(document)
    return {"groups": groups, "on_failure": template.on_failure}


def member_name(deployment: str, group: str, number: int) -> str:
    """The name of the ``number``-th member of ``group`` (from 1)."""
    return f"{deployment}-{group}-{number}"


def spread_refusal(
    group: Group, count: int, fitting: Sequence[eligibility.Candidate]
) -> str | None:
    """Why ``count`` instances of ``group`` cannot be spread over the accounts ``fitting`` its
    placement (None: they can, or it cannot be known before placement)."""
    if group.spread == "accounts":
        return _accounts_refusal(count, fitting)
    if group.spread == "regions":
        return _regions_refusal(group, count, fitting)
    return None


def _accounts_refusal(count: int, fitting: Sequence[eligibility.Candidate]) -> str | None:
    if count <= len(fitting):
        return None
    return (
        f"spread across accounts: {count} instances need {count} accounts, but only "
        f"{len(fitting)} granted to you fit the placement"
        + (f" ({', '.join(sorted(a.name for a in fitting))})" if fitting else "")
    )


def _regions_refusal(
    group: Group, count: int, fitting: Sequence[eligibility.Candidate]
) -> str | None:
    regions = _regions_offered(group, fitting)
    if regions is None or count <= len(regions):
        return None
    return (
        f"spread across regions: {count} instances need {count} regions, but the "
        f"accounts granted to you that fit the placement offer only {len(regions)}"
        + (f" ({', '.join(sorted(regions))})" if regions else "")
    )


def _regions_offered(group: Group, fitting: Sequence[eligibility.Candidate]) -> set[str] | None:
    """The regions within ``group``'s placement that the accounts ``fitting`` it declare (None:
    one of them may offer any, so only placement knows)."""
    pinned = group.placement.region
    regions: set[str] = set()
    for account in fitting:
        declared = eligibility.declared_regions(account.config)
        if declared is None:  # it may offer any: only placement knows
            if pinned is None:
                return None
            declared = (pinned,)
        regions.update(r for r in declared if pinned in (None, r))
    return regions
