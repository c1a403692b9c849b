"""The Grafana dashboards and docs/metrics.md: generated from the metric names module, committed
copies match, and every query names only metrics the module defines.

Running every query against a real Prometheus is e2e/prometheus/test_dashboard_queries.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from splitserve.api import metrics as m
from splitserve.observability import generate, metrics_doc
from splitserve.observability.dashboards import all_dashboards
from splitserve.observability.grafana import Dashboard, Panel, Target, quantile, rate, sel
from splitserve.operator import generate as operator_generate

ROOT = Path(__file__).resolve().parents[2]
NAME = re.compile(r"\bsplitserve_[a-z0-9_]+")
COMPONENT_DIRS = {
    "router": ROOT / "worker/splitserve/router",
    "worker": ROOT / "worker/splitserve/worker",
    "operator": ROOT / "operator/splitserve/operator",
    "autoscaler": ROOT / "operator/splitserve/autoscaler",
}


def queryable() -> set[str]:
    names: set[str] = set()
    for metric in m.ALL:
        if metric.kind == "histogram":
            names |= {metric.name + s for s in ("_bucket", "_count", "_sum")}
        else:
            names.add(metric.series)
    return names


def committed() -> dict[str, dict]:
    folder = ROOT / generate.DASHBOARD_DIR
    return {p.name: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def exprs(board: dict) -> list[str]:
    return [t["expr"] for p in board["panels"] for t in p.get("targets", [])]


def test_committed_files_match_a_fresh_generation() -> None:
    assert set(generate.outputs()) <= set(operator_generate.outputs())
    drifted = [p for p in operator_generate.stale(ROOT) if p in generate.outputs()]
    assert drifted == [], "run `splitserve generate`"


def test_check_names_a_stale_and_a_hand_written_file(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert operator_generate.main(["--root", str(tmp_path)]) == 0
    assert operator_generate.main(["--root", str(tmp_path), "--check"]) == 0
    doc = tmp_path / generate.METRICS_DOC
    doc.write_text(doc.read_text().replace("Prompt tokens prefilled.", "changed"))
    assert operator_generate.stale(tmp_path) == [generate.METRICS_DOC]
    assert operator_generate.write(tmp_path) == [generate.METRICS_DOC]
    (tmp_path / generate.DASHBOARD_DIR / "hand-written.json").write_text("{}")
    capsys.readouterr()
    assert operator_generate.main(["--root", str(tmp_path), "--check"]) == 1
    assert capsys.readouterr().err.strip().endswith("hand-written.json")


def test_the_five_dashboards_are_shipped() -> None:
    boards = committed()
    assert {b["title"].split(" / ")[1] for b in boards.values()} == {
        "Service overview", "Pools", "KV transfer", "Autoscaler", "Operator"}
    assert len({b["uid"] for b in boards.values()}) == len(boards)


@pytest.mark.parametrize("name", sorted(committed()))
def test_every_query_names_only_module_metrics(name: str) -> None:
    board = committed()[name]
    known = queryable()
    queries = exprs(board)
    assert queries
    for expr in queries:
        used = set(NAME.findall(expr))
        assert used, f"{name}: {expr!r} reads no splitserve metric"
        assert used <= known, f"{name}: {sorted(used - known)} are not in splitserve.api.metrics"
        assert "vector(" not in expr and " or " not in expr, f"{name}: padding in {expr!r}"
    for var in board["templating"]["list"][1:]:
        assert set(NAME.findall(var["definition"])) <= known, var["definition"]


@pytest.mark.parametrize("name", sorted(committed()))
def test_every_dashboard_serves_any_service(name: str) -> None:
    board = committed()[name]
    variables = [v["name"] for v in board["templating"]["list"]]
    assert variables == ["datasource", "namespace", "service"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"] and panel["description"], panel["title"]
    # everything but the operator-wide write counter is scoped to the chosen service
    for expr in exprs(board):
        if m.RECONCILE_WRITES.series not in expr:
            assert 'namespace=~"$namespace"' in expr and 'service=~"$service"' in expr, expr


def test_every_panel_has_a_query_per_metric_family_it_shows() -> None:
    # catch a panel whose targets were lost in rendering
    for board in all_dashboards().values():
        rendered = board.render()
        panels = [p for p in rendered["panels"] if p["type"] != "row"]
        assert [len(p["targets"]) for p in panels] == [len(p.targets) for p in board.panels]


def test_builders_refuse_the_wrong_metric_kind() -> None:
    with pytest.raises(ValueError, match="rate\\(\\) of a gauge"):
        rate(m.QUEUE_DEPTH, sel())
    with pytest.raises(ValueError, match="histogram_quantile needs a histogram"):
        quantile(0.9, m.PROMPT_TOKENS, sel())
    with pytest.raises(ValueError, match="_bucket, _count or _sum"):
        rate(m.TTFT_SECONDS, sel())
    with pytest.raises(ValueError, match="expected 0 < q < 1"):
        quantile(95, m.TTFT_SECONDS, sel())


def test_selector_quotes_values_and_supports_regex() -> None:
    assert sel(scoped=False) == ""
    assert sel(scoped=False, role="~prefill|decode", reason='a"b') == \
        '{role=~"prefill|decode",reason="a\\"b"}'


def test_a_panel_renders_its_thresholds_as_lines() -> None:
    panel = Panel("t", "d", (Target("x"),), "s", thresholds=())
    assert panel.render(1, 0, 0)["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"] == \
        {"mode": "off"}
    board = all_dashboards()["splitserve-service.json"]
    ttft = next(p for p in board.render()["panels"] if p["title"] == "Time to first token")
    steps = ttft["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps[-1]["value"] == 2.0 and ttft["fieldConfig"]["defaults"]["unit"] == "s"
    assert isinstance(board, Dashboard)


def _emitters(const: str) -> set[str]:
    """Components whose code creates or updates the metric (reading it does not count)."""
    pattern = re.compile(rf"(?:inc|set|observe|counter|gauge|Histogram)\(\s*\w+\.{const}\b")
    return {component for component, folder in COMPONENT_DIRS.items()
            if any(pattern.search(p.read_text()) for p in folder.rglob("*.py"))}


def test_the_reference_names_who_emits_each_metric() -> None:
    assert set(metrics_doc.EMITTERS) == set(metrics_doc.constants())
    for const, emitters in metrics_doc.EMITTERS.items():
        assert _emitters(const) == set(emitters), const


def test_the_reference_lists_every_metric_with_its_labels() -> None:
    text = (ROOT / generate.METRICS_DOC).read_text()
    for metric in m.ALL:
        row = next(line for line in text.splitlines() if line.startswith(f"| `{metric.name}"))
        assert metric.kind in row and metric.help in row
        for label in metric.extra_labels:
            assert f"`{label}`" in row, (metric.name, label)
