"""The files generated from the metric names module, for `splitserve generate`: one Grafana
dashboard JSON per dashboard in `charts/splitserve/dashboards/`, and `docs/metrics.md`."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

from splitserve.observability import metrics_doc
from splitserve.observability.dashboards import all_dashboards
from splitserve.observability.grafana import to_json

DASHBOARD_DIR = "charts/splitserve/dashboards"
METRICS_DOC = "docs/metrics.md"


def outputs() -> dict[str, Callable[[], str]]:
    """Path under the repository root -> function rendering its text."""
    found: dict[str, Callable[[], str]] = {
        f"{DASHBOARD_DIR}/{name}": functools.partial(to_json, board)
        for name, board in all_dashboards().items()}
    found[METRICS_DOC] = metrics_doc.render
    return found


def foreign_dashboards(root: Path) -> list[str]:
    """Dashboard files the chart would ship that are not generated (written by hand)."""
    made = set(outputs())
    return sorted(rel for p in (root / DASHBOARD_DIR).glob("*.json")
                  if (rel := p.relative_to(root).as_posix()) not in made)
