"""The metric names a PromQL expression reads, and the names a /metrics exposition declares: what
the dashboard and alert tests compare."""

from __future__ import annotations

import re

from prometheus_client.parser import text_string_to_metric_families

# Series Prometheus makes itself for every target, not exported by any service.
PROMETHEUS_SERIES = frozenset({"up"})

_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right"}
    | {"offset", "bool", "inf", "nan"}
)
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
}


def metric_names(expr: str) -> set[str]:
    """Every metric name ``expr`` reads. Strings, label matchers, grouping label lists, ranges
    and Grafana's $variables are removed first; what remains is functions (followed by a
    parenthesis), keywords, numbers and metric names."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\$\w+", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        name = match.group()
        if name.lower() in _KEYWORDS or text[match.end() :].lstrip().startswith("("):
            continue
        if match.start() and text[match.start() - 1].isdigit():
            continue  # a unit: 5m, 1e3
        names.add(name)
    return names


def declared_families(exposition: str) -> dict[str, set[str]]:
    """Each family an exposition declares, with its sample names (from its ``# TYPE`` too: a
    labelled series nothing has moved yet is a family without samples)."""
    return {
        family.name: {family.name + s for s in _SUFFIXES.get(family.type, ("",))}
        | {sample.name for sample in family.samples}
        for family in text_string_to_metric_families(exposition)
    }


def declared_names(exposition: str) -> set[str]:
    return set().union(*declared_families(exposition).values())
