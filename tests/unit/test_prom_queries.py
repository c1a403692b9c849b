"""PromQL built from the metric names, answers parsed into snapshots (pure), client errors."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from splitserve.api import metrics as m
from splitserve.autoscaler.prom import (
    PrometheusClient,
    PrometheusError,
    Scope,
    parse_vector,
    queries,
    selector,
    to_snapshot,
)

SCOPE = Scope(namespace="llm", service="chat", percentile=99.0)


def vector(*samples: tuple[dict[str, str], str]) -> dict[str, object]:
    return {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": labels, "value": [1700000000.0, value]} for labels, value in samples]}}


def test_selector_pins_namespace_and_service_and_escapes() -> None:
    assert selector(SCOPE) == '{namespace="llm",service="chat"}'
    tricky = Scope(namespace="a", service='x"y\\z')
    assert selector(tricky, role="router") == '{namespace="a",service="x\\"y\\\\z",role="router"}'


def test_every_query_uses_the_metric_names_module() -> None:
    q = queries(SCOPE)
    assert q["prompt_rate"] == (f'sum by (pool) (rate({m.PROMPT_TOKENS.name}_total'
                                '{namespace="llm",service="chat"}[1m]))')
    assert q["generation_rate"].startswith(f"sum by (pool) (rate({m.GENERATION_TOKENS.series}{{")
    assert q["queued_prompt_tokens"] == (f"sum by (pool) ({m.QUEUED_PROMPT_TOKENS.name}"
                                         '{namespace="llm",service="chat"})')
    for key, metric in [("queue_depth", m.QUEUE_DEPTH), ("running", m.RUNNING_SEQUENCES),
                        ("kv_blocks_used", m.KV_BLOCKS_USED),
                        ("kv_blocks_total", m.KV_BLOCKS_TOTAL)]:
        assert q[key].startswith(f"sum by (pool) ({metric.name}{{")
    assert set(q) == {"prompt_rate", "generation_rate", "queued_prompt_tokens", "queue_depth",
                      "running", "kv_blocks_used", "kv_blocks_total", "ttft", "tpot"}


def test_latency_is_a_quantile_of_bucket_rates_at_the_slo_percentile() -> None:
    q = queries(Scope(namespace="llm", service="chat", percentile=95.0, rate_window="2m"))
    assert q["ttft"] == (f"histogram_quantile(0.95, sum by (le) (rate({m.TTFT_SECONDS.name}"
                         '_bucket{namespace="llm",service="chat"}[2m])))')
    assert q["tpot"].startswith(f"histogram_quantile(0.95, sum by (le) "
                                f"(rate({m.TPOT_SECONDS.name}_bucket{{")


def test_latency_can_be_limited_to_one_role() -> None:
    q = queries(Scope(namespace="llm", service="chat", latency_role="router"))
    assert 'role="router"' in q["ttft"] and 'role="router"' in q["tpot"]
    assert "role" not in q["prompt_rate"]


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"namespace": "", "service": "s"}, "namespace"),
    ({"namespace": "n", "service": ""}, "service"),
    ({"namespace": "n", "service": "s", "percentile": 100.0}, "percentile"),
    ({"namespace": "n", "service": "s", "rate_window": "1 minute"}, "rate_window"),
    ({"namespace": "n", "service": "s", "rate_window": "m"}, "rate_window"),
])
def test_bad_scope_names_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Scope(**kwargs)  # type: ignore[arg-type]


def test_parse_vector_by_pool_and_drops_nan() -> None:
    body = vector(({"pool": "prefill"}, "12.5"), ({"pool": "decode"}, "NaN"), ({}, "3"))
    assert parse_vector(body) == {"prefill": 12.5, "": 3.0}


def test_parse_vector_reports_errors() -> None:
    with pytest.raises(PrometheusError, match="bad_data: parse error"):
        parse_vector({"status": "error", "errorType": "bad_data", "error": "parse error"})
    with pytest.raises(PrometheusError, match="vector"):
        parse_vector({"status": "success", "data": {"resultType": "matrix", "result": []}})


def test_snapshot_maps_pools_and_keeps_missing_series_none() -> None:
    answers = {
        "prompt_rate": {"prefill": 900.0, "decode": 40.0},
        "generation_rate": {"decode": 120.0},
        "queued_prompt_tokens": {"prefill": 300.0},
        "queue_depth": {"prefill": 2.0, "decode": 0.0},
        "running": {"decode": 7.0},
        "kv_blocks_used": {"decode": 50.0},
        "kv_blocks_total": {"decode": 512.0},
        "ttft": {"": 0.8},
        "tpot": {},
    }
    s = to_snapshot(SCOPE, answers, now=10.0)
    assert s.time == 10.0
    assert s.prefill.token_rate == 900.0 and s.prefill.queued_prompt_tokens == 300.0
    assert s.prefill.running is None and s.prefill.kv_blocks_total is None
    assert s.decode.token_rate == 120.0 and s.decode.running == 7.0
    assert s.decode.kv_blocks_total == 512.0 and s.decode.queued_prompt_tokens is None
    assert s.ttft == 0.8 and s.tpot is None


def test_snapshot_of_nothing_is_all_none() -> None:
    s = to_snapshot(SCOPE, {}, now=0.0)
    assert s.prefill.token_rate is None and s.decode.token_rate is None
    assert s.ttft is None and s.tpot is None


def test_custom_pool_labels() -> None:
    scope = Scope(namespace="n", service="s", prefill_pool="p0", decode_pool="d0")
    s = to_snapshot(scope, {"prompt_rate": {"p0": 1.0}, "generation_rate": {"d0": 2.0}}, 0.0)
    assert s.prefill.token_rate == 1.0 and s.decode.token_rate == 2.0


def test_client_rejects_bad_urls() -> None:
    with pytest.raises(ValueError, match="prometheusUrl"):
        PrometheusClient("prometheus:9090")


def test_client_reports_an_unreachable_server() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = PrometheusClient(f"http://127.0.0.1:{port}/", timeout=2.0)
    with pytest.raises(PrometheusError, match=f"127.0.0.1:{port}"):
        client.query("up")


def test_latency_histograms_are_observed_by_the_router_alone() -> None:
    """TTFT/TPOT quantiles summed over a service count each request once only when exactly one
    component observes them; that component is the router."""
    root = Path(__file__).resolve().parents[2]
    observers = {
        str(path.relative_to(root))
        for path in (root / "worker" / "splitserve").rglob("*.py")
        for metric in ("TTFT_SECONDS", "TPOT_SECONDS")
        if f"observe(names.{metric}" in path.read_text() or f"observe({metric}" in
        path.read_text()
    }
    assert observers == {"worker/splitserve/router/server.py"}
