"""The Grafana dashboard reads only series the services export: every PromQL expression in
deploy/grafana/boreas.json names metrics that the registry's exposition declares."""

from __future__ import annotations

import json
from pathlib import Path

import shared.metrics  # noqa: F401  (every series is defined there, as the services import it)
from shared.metrics import exposition
from tests.contract.promql import (
    PROMETHEUS_SERIES,
    declared_families,
    declared_names,
    metric_names,
)

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "boreas.json"


def expressions() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"] for p in panels for t in p.get("targets", [])]


def test_the_name_extraction_reads_promql() -> None:
    expr = (
        "histogram_quantile(0.95, sum by (le, provider) "
        '(rate(x_bucket{a="b, c"}[$__rate_interval])))'
        ' / on (provider) group_left sum(y_total offset 5m) > 1e3 or absent(z{service="q"})'
    )
    assert metric_names(expr) == {"x_bucket", "y_total", "z"}


def test_every_dashboard_expression_reads_exported_series() -> None:
    exported = declared_names(exposition()[0].decode()) | PROMETHEUS_SERIES
    exprs = expressions()
    assert len(exprs) >= 15
    for expr in exprs:
        names = metric_names(expr)
        assert names, f"no metric in {expr!r}"
        assert names <= exported, f"{sorted(names - exported)} not exported ({expr!r})"


def test_every_boreas_series_is_on_the_dashboard() -> None:
    shown = {name for expr in expressions() for name in metric_names(expr)}
    families = declared_families(exposition()[0].decode())
    missing = sorted(
        family
        for family, names in families.items()
        if family.startswith("boreas_") and not names & shown
    )
    assert not missing, f"exported but on no panel: {missing}"
