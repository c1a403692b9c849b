"""Prometheus inputs of the autoscaler: PromQL built from the metric names, instant queries.

Every query is pinned to one service (`namespace` and `service` labels) and aggregated with
`sum by (pool)`; latency is `histogram_quantile` at the SLO percentile over the rate of the
histogram buckets, summed over the service. A series that is absent (or NaN, as a quantile of
no observations is) becomes None in the snapshot: no data, never zero.

Building queries and turning answers into a `MetricsSnapshot` are pure; `PrometheusClient` is
the thin HTTP shell (standard library only, one GET per query).
"""

from __future__ import annotations

import asyncio
import json
import math
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from splitserve.api import metrics as m
from splitserve.autoscaler.snapshot import MetricsSnapshot, PoolMetrics

POOL_FIELDS: dict[str, m.Metric] = {
    "token_rate": m.PROMPT_TOKENS,  # replaced by GENERATION_TOKENS for the decode pool
    "queued_prompt_tokens": m.QUEUED_PROMPT_TOKENS,
    "queue_depth": m.QUEUE_DEPTH,
    "running": m.RUNNING_SEQUENCES,
    "kv_blocks_used": m.KV_BLOCKS_USED,
    "kv_blocks_total": m.KV_BLOCKS_TOTAL,
}


class PrometheusError(RuntimeError):
    """Prometheus could not be reached or refused a query."""


@dataclass(frozen=True)
class Scope:
    """Which series belong to one SplitService, and how to aggregate them."""

    namespace: str
    service: str
    percentile: float = 95.0
    rate_window: str = "1m"
    prefill_pool: str = "prefill"
    decode_pool: str = "decode"
    latency_role: str | None = None  # only this role's TTFT/TPOT (e.g. "router"); None: all

    def __post_init__(self) -> None:
        if not self.namespace or not self.service:
            raise ValueError("scope: namespace and service must be non-empty")
        if not 0 < self.percentile < 100:
            raise ValueError(f"scope.percentile={self.percentile}: expected 0 < p < 100")
        w = self.rate_window
        if len(w) < 2 or w[-1] not in "smhd" or not w[:-1].isdigit():
            raise ValueError(f"scope.rate_window={self.rate_window!r}: expected e.g. 30s or 1m")


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def selector(scope: Scope, **extra: str) -> str:
    """`{namespace="…",service="…",…}` with the values escaped for PromQL."""
    labels = {"namespace": scope.namespace, "service": scope.service, **extra}
    return "{" + ",".join(f"{k}={_quote(v)}" for k, v in labels.items()) + "}"


def queries(scope: Scope) -> dict[str, str]:
    """Every query the autoscaler runs, by input name (pure)."""
    sel, w = selector(scope), scope.rate_window
    out = {
        "prompt_rate": f"sum by (pool) (rate({m.PROMPT_TOKENS.series}{sel}[{w}]))",
        "generation_rate": f"sum by (pool) (rate({m.GENERATION_TOKENS.series}{sel}[{w}]))",
    }
    for name, metric in POOL_FIELDS.items():
        if name != "token_rate":
            out[name] = f"sum by (pool) ({metric.series}{sel})"
    lat = selector(scope, role=scope.latency_role) if scope.latency_role else sel
    q = scope.percentile / 100.0
    for name, metric in (("ttft", m.TTFT_SECONDS), ("tpot", m.TPOT_SECONDS)):
        out[name] = (f"histogram_quantile({q:g}, sum by (le) "
                     f"(rate({metric.name}_bucket{lat}[{w}])))")
    return out


def parse_vector(body: Mapping[str, Any]) -> dict[str, float]:
    """An instant-query answer as {pool label (or "" when absent): value}; NaN/Inf dropped."""
    if body.get("status") != "success":
        raise PrometheusError(f"query failed: {body.get('errorType')}: {body.get('error')}")
    data = body.get("data") or {}
    if data.get("resultType") != "vector":
        raise PrometheusError(f"expected a vector result, got {data.get('resultType')!r}")
    out: dict[str, float] = {}
    for sample in data.get("result") or []:
        value = float(sample["value"][1])
        if math.isfinite(value):
            out[sample.get("metric", {}).get("pool", "")] = value
    return out


def to_snapshot(scope: Scope, answers: Mapping[str, dict[str, float]], now: float
                ) -> MetricsSnapshot:
    """The snapshot from parsed answers of `queries(scope)` (pure)."""
    def pool(name: str, rate_key: str) -> PoolMetrics:
        values = {f: answers.get(f, {}).get(name) for f in POOL_FIELDS if f != "token_rate"}
        return PoolMetrics(token_rate=answers.get(rate_key, {}).get(name), **values)

    def latency(key: str) -> float | None:
        values = answers.get(key, {})
        return next(iter(values.values())) if values else None

    return MetricsSnapshot(time=now, prefill=pool(scope.prefill_pool, "prompt_rate"),
                           decode=pool(scope.decode_pool, "generation_rate"),
                           ttft=latency("ttft"), tpot=latency("tpot"))


class PrometheusClient:
    """Instant queries against the Prometheus HTTP API (`GET /api/v1/query`)."""

    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        parsed = urllib.parse.urlparse(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"prometheusUrl={base_url!r}: expected http(s)://host[:port]")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def query(self, promql: str, at: float | None = None) -> dict[str, float]:
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        url = f"{self.base_url}/api/v1/query?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as exc:
            try:
                body = json.load(exc)
            except ValueError:
                raise PrometheusError(f"{url}: HTTP {exc.code}") from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise PrometheusError(f"{self.base_url}: {exc}") from exc
        return parse_vector(body)

    def snapshot(self, scope: Scope, now: float) -> MetricsSnapshot:
        answers = {name: self.query(q, at=now) for name, q in queries(scope).items()}
        return to_snapshot(scope, answers, now)

    async def snapshot_async(self, scope: Scope, now: float) -> MetricsSnapshot:
        """`snapshot` off the event loop (the operator's handlers are async)."""
        return await asyncio.to_thread(self.snapshot, scope, now)
