"""A small description of Grafana dashboards and its rendering to dashboard JSON (pure).

A `Dashboard` holds rows of `Panel`s; a panel holds PromQL `Target`s. Every dashboard gets the
template variables `datasource`, `namespace` and `service`, so one dashboard serves every
SplitService. Panels are laid out left to right, `PER_ROW` to a row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from splitserve.api import metrics as m

SCHEMA_VERSION = 39
PER_ROW = 2
PANEL_WIDTH, PANEL_HEIGHT = 24 // PER_ROW, 8
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"
VARIABLES = ("namespace", "service")

PanelKind = Literal["timeseries", "stat"]


def quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def sel(*, scoped: bool = True, **labels: str) -> str:
    """A label matcher: the dashboard's namespace and service (regex, for "All") plus `labels`
    (a value starting with `~` is a regex match)."""
    parts = [f"{v}=~{quote('$' + v)}" for v in VARIABLES] if scoped else []
    for key, value in labels.items():
        op, val = ("=~", value[1:]) if value.startswith("~") else ("=", value)
        parts.append(f"{key}{op}{quote(val)}")
    return "{" + ",".join(parts) + "}" if parts else ""


def rate(metric: m.Metric, selector: str, suffix: str = "") -> str:
    """`rate(...)` of a counter, or of a histogram's `_bucket`/`_count`/`_sum` (`suffix`)."""
    if metric.kind == "counter" and suffix:
        raise ValueError(f"{metric.name}: a counter has no {suffix} series")
    if metric.kind == "gauge":
        raise ValueError(f"{metric.name}: rate() of a gauge is meaningless")
    if metric.kind == "histogram" and suffix not in ("_bucket", "_count", "_sum"):
        raise ValueError(f"{metric.name}: a histogram is queried by _bucket, _count or _sum")
    name = metric.series if metric.kind == "counter" else metric.name + suffix
    return f"rate({name}{selector}[{RATE}])"


def increase(metric: m.Metric, selector: str) -> str:
    """`increase(...)` of a counter over the rate window."""
    return "increase" + rate(metric, selector).removeprefix("rate")


def quantile(q: float, metric: m.Metric, selector: str, by: tuple[str, ...] = ()) -> str:
    if metric.kind != "histogram":
        raise ValueError(f"{metric.name}: histogram_quantile needs a histogram")
    if not 0 < q < 1:
        raise ValueError(f"quantile={q}: expected 0 < q < 1")
    groups = ", ".join(("le", *by))
    return f"histogram_quantile({q:g}, sum by ({groups}) ({rate(metric, selector, '_bucket')}))"


@dataclass(frozen=True)
class Target:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Threshold:
    value: float
    color: str = "red"


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    targets: tuple[Target, ...]
    unit: str = "short"
    kind: PanelKind = "timeseries"
    thresholds: tuple[Threshold, ...] = ()
    min: float | None = None
    max: float | None = None

    def render(self, panel_id: int, x: int, y: int) -> dict[str, Any]:
        steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
        steps += [{"color": t.color, "value": t.value} for t in self.thresholds]
        defaults: dict[str, Any] = {
            "unit": self.unit,
            "thresholds": {"mode": "absolute", "steps": steps},
        }
        if self.min is not None:
            defaults["min"] = self.min
        if self.max is not None:
            defaults["max"] = self.max
        options: dict[str, Any] = {"tooltip": {"mode": "multi", "sort": "desc"},
                                   "legend": {"displayMode": "list", "placement": "bottom"}}
        if self.kind == "timeseries":
            defaults["custom"] = {
                "drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "spanNulls": False,
                "thresholdsStyle": {"mode": "line" if self.thresholds else "off"},
            }
        else:
            options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                       "colorMode": "value", "graphMode": "area", "textMode": "auto"}
        return {
            "id": panel_id, "type": self.kind, "title": self.title,
            "description": self.description, "datasource": DATASOURCE,
            "gridPos": {"h": PANEL_HEIGHT, "w": PANEL_WIDTH, "x": x, "y": y},
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": options,
            "targets": [{"datasource": DATASOURCE, "expr": t.expr, "legendFormat": t.legend,
                         "refId": chr(ord("A") + i), "range": True, "instant": False}
                        for i, t in enumerate(self.targets)],
        }


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    variable_metric: m.Metric  # whose label values list the namespaces and services
    rows: tuple[Row, ...]
    tags: tuple[str, ...] = field(default=("splitserve",))

    @property
    def panels(self) -> list[Panel]:
        return [p for row in self.rows for p in row.panels]

    def variables(self) -> list[dict[str, Any]]:
        series = self.variable_metric.series
        if self.variable_metric.kind == "histogram":
            series += "_count"

        def query(label: str, match: str) -> dict[str, Any]:
            text = f"label_values({series}{match}, {label})"
            return {"name": label, "label": label.capitalize(), "type": "query",
                    "datasource": DATASOURCE, "query": {"query": text, "refId": label},
                    "definition": text, "refresh": 2, "sort": 1, "multi": True,
                    "includeAll": True, "allValue": ".*", "current": {}, "options": [],
                    "hide": 0}

        return [
            {"name": "datasource", "label": "Data source", "type": "datasource",
             "query": "prometheus", "current": {}, "hide": 0, "refresh": 1, "options": []},
            query("namespace", ""),
            query("service", '{namespace=~"$namespace"}'),
        ]

    def render(self) -> dict[str, Any]:
        panels: list[dict[str, Any]] = []
        y, next_id = 0, 1
        for row in self.rows:
            panels.append({"id": next_id, "type": "row", "title": row.title, "collapsed": False,
                           "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
            next_id, y = next_id + 1, y + 1
            for i, panel in enumerate(row.panels):
                x = (i % PER_ROW) * PANEL_WIDTH
                if i and i % PER_ROW == 0:
                    y += PANEL_HEIGHT
                panels.append(panel.render(next_id, x, y))
                next_id += 1
            y += PANEL_HEIGHT
        return {
            "uid": self.uid, "title": self.title, "description": self.description,
            "tags": list(self.tags), "timezone": "browser", "editable": True,
            "schemaVersion": SCHEMA_VERSION, "version": 1, "refresh": "30s",
            "time": {"from": "now-1h", "to": "now"}, "graphTooltip": 1,
            "templating": {"list": self.variables()}, "annotations": {"list": []},
            "links": [{"title": "splitserve", "type": "dashboards", "tags": ["splitserve"],
                       "asDropdown": True, "includeVars": True, "keepTime": True}],
            "panels": panels,
        }


def to_json(dashboard: Dashboard) -> str:
    return json.dumps(dashboard.render(), indent=2, sort_keys=True) + "\n"
