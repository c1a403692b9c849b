"""The metric names module: one definition per name, prefixed, labelled, library-free."""

from __future__ import annotations

import ast
import inspect

from splitserve.api import metrics


def test_names_are_unique_prefixed_and_labelled() -> None:
    names = [m.name for m in metrics.ALL]
    assert len(names) == len(set(names))
    for m in metrics.ALL:
        assert m.name.startswith("splitserve_"), m.name
        assert not m.name.endswith("_total"), m.name
        assert {"service", "pool", "role"} <= set(m.labels), m.name


def test_histograms_have_sorted_buckets() -> None:
    histograms = [m for m in metrics.ALL if m.kind == "histogram"]
    assert {metrics.TTFT_SECONDS, metrics.TPOT_SECONDS} <= set(histograms)
    for m in histograms:
        assert list(m.buckets) == sorted(set(m.buckets)) and m.buckets, m.name


def test_counter_series_gain_total_suffix() -> None:
    assert metrics.PROMPT_TOKENS.series == "splitserve_prompt_tokens_total"
    assert metrics.QUEUE_DEPTH.series == "splitserve_queue_depth"


def test_module_imports_no_metrics_library() -> None:
    tree = ast.parse(inspect.getsource(metrics))
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not any(name.startswith("prometheus") for name in imported)
