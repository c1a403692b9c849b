"""docs/metrics.md, generated from `splitserve.api.metrics` (pure)."""

from __future__ import annotations

from splitserve.api import metrics as m
from splitserve.observability.dashboards import all_dashboards

# constant name in splitserve.api.metrics -> the components that emit it (checked by a test
# against the source: each listed component's package refers to the constant)
EMITTERS: dict[str, tuple[str, ...]] = {
    "TTFT_SECONDS": ("router",),
    "TPOT_SECONDS": ("router",),
    "E2E_SECONDS": ("router",),
    "QUEUE_DEPTH": ("worker",),
    "QUEUED_PROMPT_TOKENS": ("worker",),
    "RUNNING_SEQUENCES": ("worker",),
    "KV_BLOCKS_USED": ("worker",),
    "KV_BLOCKS_TOTAL": ("worker",),
    "PROMPT_TOKENS": ("worker",),
    "GENERATION_TOKENS": ("worker",),
    "ENGINE_STEPS": ("worker",),
    "KV_TRANSFER_BYTES": ("worker",),
    "KV_TRANSFER_SECONDS": ("worker",),
    "KV_TRANSFER_FAILURES": ("worker",),
    "KV_RESERVATIONS": ("worker",),
    "KV_RESERVATION_TIMEOUTS": ("worker",),
    "ROUTER_REQUESTS": ("router",),
    "ROUTER_ERRORS": ("router",),
    "ROUTER_RETRIES": ("router",),
    "ROUTER_LOCAL_PREFILL": ("router",),
    "ROUTER_INFLIGHT": ("router",),
    "ROUTER_WORKERS": ("router",),
    "AUTOSCALER_INPUT": ("autoscaler",),
    "AUTOSCALER_PREDICTED_LOAD": ("autoscaler",),
    "AUTOSCALER_DESIRED_REPLICAS": ("autoscaler",),
    "AUTOSCALER_DECISIONS": ("autoscaler",),
    "AUTOSCALER_LIMITED": ("autoscaler",),
    "RECONCILES": ("operator",),
    "RECONCILE_ERRORS": ("operator",),
    "RECONCILE_SECONDS": ("operator",),
    "RECONCILE_WRITES": ("operator",),
    "POOL_DESIRED_REPLICAS": ("operator",),
    "POOL_READY_REPLICAS": ("operator",),
}

COMPONENTS = {
    "router": "router",
    "worker": "prefill/decode workers",
    "operator": "operator",
    "autoscaler": "autoscaler (in the operator)",
}

LABELS = {
    "namespace": "namespace of the SplitService",
    "service": "name of the SplitService",
    "pool": "`prefill` or `decode` on workers and in autoscaler series; `router` on the "
            "router (its `splitserve_router_workers` uses it for the pool it counts); "
            "`<service>-<role>` (the SplitPool's name) in the operator's pool gauges",
    "role": "`prefill`, `decode` or `colocated` (workers), `router`, `operator`; in autoscaler "
            "series the pool it sizes. Dashboards group pools by this label",
}

INTRO = """\
# Metrics reference

Generated from `operator/splitserve/api/metrics.py` by `splitserve generate`; a test fails
when this file and the module disagree. Every metric carries the labels `namespace`, `service`,
`pool` and `role`; the table lists the extra labels. Counters are exported with the `_total`
suffix; histograms as `_bucket`, `_count` and `_sum`. The Grafana dashboards in
`charts/splitserve/dashboards/` are generated from the same module.
"""


DASHBOARDS = """\
## Grafana dashboards

The chart ships every file of `charts/splitserve/dashboards/` as a ConfigMap for Grafana's
dashboard sidecar; the files also import by hand (Dashboards → New → Import). Each has the
variables `datasource` (a Prometheus that scrapes the operator, routers and workers),
`namespace` and `service`, so one dashboard serves every SplitService. Latency panels draw the
API's default SLO targets as threshold lines.
"""


def constants() -> dict[str, m.Metric]:
    return {k: v for k, v in vars(m).items() if isinstance(v, m.Metric)}


def _series(metric: m.Metric) -> str:
    if metric.kind == "histogram":
        return f"`{metric.name}_bucket`, `_count`, `_sum`"
    return f"`{metric.series}`"


def render() -> str:
    missing = sorted(set(constants()) ^ set(EMITTERS))
    if missing:
        raise ValueError(f"EMITTERS and splitserve.api.metrics disagree on {missing}")
    lines = [INTRO, "## Labels on every metric", "", "| label | value |", "| --- | --- |"]
    lines += [f"| `{k}` | {LABELS[k]} |" for k in m.BASE_LABELS]
    lines += ["", "## Metrics", "",
              "| series | type | extra labels | meaning | emitted by |",
              "| --- | --- | --- | --- | --- |"]
    for const, metric in constants().items():
        extra = ", ".join(f"`{x}`" for x in metric.extra_labels) or "—"
        who = ", ".join(COMPONENTS[c] for c in EMITTERS[const]) or "declared, not emitted yet"
        lines.append(f"| {_series(metric)} | {metric.kind} | {extra} | {metric.help} | {who} |")
    lines += ["", "## Histogram buckets (seconds)", ""]
    for metric in (x for x in constants().values() if x.kind == "histogram"):
        lines.append(f"- `{metric.name}`: {', '.join(f'{b:g}' for b in metric.buckets)}")
    lines += ["", DASHBOARDS, "| file | dashboard | panels |", "| --- | --- | --- |"]
    for name, board in all_dashboards().items():
        panels = "; ".join(p.title for p in board.panels)
        lines.append(f"| `{name}` | {board.title.split(' / ')[-1]}: {board.description} | "
                     f"{panels} |")
    return "\n".join(lines) + "\n"
