"""The shipped Grafana dashboards, written against the names in `splitserve.api.metrics`.

Service overview, pools, KV transfer, autoscaler and operator. Pool panels group by `role`
(prefill, decode), the label every component agrees on. The SLO lines are the API's default
targets; `AutoscalingSpec` is where a service sets its own.
"""

from __future__ import annotations

from splitserve.api import metrics as m
from splitserve.api.serving import AutoscalingSpec
from splitserve.observability.grafana import (
    Dashboard,
    Panel,
    Row,
    Target,
    Threshold,
    increase,
    quantile,
    rate,
    sel,
)

QUANTILES = (0.5, 0.95, 0.99)
POOLS = "~prefill|decode"
_SLO = AutoscalingSpec()
TTFT_SLO_S = _SLO.ttft_target_ms / 1000
TPOT_SLO_S = _SLO.tpot_target_ms / 1000


def _percentiles(metric: m.Metric, selector: str, by: tuple[str, ...] = ()) -> tuple[Target, ...]:
    legend = "".join(f"{{{{{b}}}}} " for b in by)
    return tuple(Target(quantile(q, metric, selector, by), f"{legend}p{q * 100:g}")
                 for q in QUANTILES)


def _le(seconds: float, buckets: tuple[float, ...]) -> str:
    if seconds not in buckets:
        raise ValueError(f"SLO {seconds}s is not a bucket boundary of {buckets}: the attainment "
                         "panel needs one")
    return repr(float(seconds))


def _attainment(metric: m.Metric, slo_s: float) -> Target:
    router = sel(role="router")
    within = f'sum({rate(metric, sel(role="router", le=_le(slo_s, metric.buckets)), "_bucket")})'
    return Target(f"{within} / sum({rate(metric, router, '_count')})", "within SLO")


def service_overview() -> Dashboard:
    router = sel(role="router")
    requests = Panel(
        "Requests by status code", "Requests the router answered, per second, by HTTP status.",
        (Target(f"sum by (code) ({rate(m.ROUTER_REQUESTS, router)})", "{{code}}"),), "reqps")
    errors = Panel(
        "Errors by reason", "Requests that ended in an error, per second, by reason.",
        (Target(f"sum by (reason) ({rate(m.ROUTER_ERRORS, router)})", "{{reason}}"),), "reqps")
    error_ratio = Panel(
        "Error ratio", "Share of requests that ended in an error.",
        (Target(f"sum({rate(m.ROUTER_ERRORS, router)}) / sum({rate(m.ROUTER_REQUESTS, router)})",
                "errors"),), "percentunit", "stat", min=0, max=1)
    inflight = Panel("In-flight requests", "Requests the router is serving now.",
                     (Target(f"sum({m.ROUTER_INFLIGHT.series}{router})", "in flight"),))
    ttft = Panel(
        "Time to first token", "TTFT percentiles measured at the router; the line is the "
        "default TTFT SLO.", _percentiles(m.TTFT_SECONDS, router), "s",
        thresholds=(Threshold(TTFT_SLO_S),))
    tpot = Panel(
        "Time per output token", "TPOT percentiles measured at the router; the line is the "
        "default TPOT SLO.", _percentiles(m.TPOT_SECONDS, router), "s",
        thresholds=(Threshold(TPOT_SLO_S),))
    ttft_ok = Panel(f"Requests within the TTFT SLO ({TTFT_SLO_S:g}s)",
                    "Share of requests whose first token came within the default TTFT target.",
                    (_attainment(m.TTFT_SECONDS, TTFT_SLO_S),), "percentunit", "stat", min=0,
                    max=1)
    tpot_ok = Panel(f"Requests within the TPOT SLO ({TPOT_SLO_S:g}s)",
                    "Share of requests whose time per output token met the default TPOT target.",
                    (_attainment(m.TPOT_SECONDS, TPOT_SLO_S),), "percentunit", "stat", min=0,
                    max=1)
    duration = Panel("Request duration", "Time from arrival to the last token, at the router.",
                     _percentiles(m.E2E_SECONDS, router), "s")
    workers = Panel("Workers known to the router", "Ready workers the router can pick, by pool.",
                    (Target(f"sum by (pool) ({m.ROUTER_WORKERS.series}{router})", "{{pool}}"),))
    local = Panel(
        "Prefilled on decode", "Requests prefilled in place on a decode worker (short prompt "
        "or no prefill worker), per second, by reason.",
        (Target(f"sum by (reason) ({rate(m.ROUTER_LOCAL_PREFILL, router)})", "{{reason}}"),),
        "reqps")
    return Dashboard(
        "splitserve-service", "splitserve / Service overview",
        "Requests, errors and latency of one SplitService against its SLOs.",
        m.ROUTER_REQUESTS, (
            Row("Traffic", (requests, errors, error_ratio, inflight)),
            Row("Latency", (ttft, tpot, ttft_ok, tpot_ok, duration)),
            Row("Routing", (workers, local)),
        ))


def pools() -> Dashboard:
    workers = sel(role=POOLS)

    def by_role(metric: m.Metric, title: str, description: str, unit: str = "short") -> Panel:
        return Panel(title, description,
                     (Target(f"sum by (role) ({metric.series}{workers})", "{{role}}"),), unit)

    desired = Panel(
        "Replicas: desired and ready", "Replicas each pool asks for and replicas passing "
        "readiness, as the operator sees them.",
        (Target(f"sum by (role) ({m.POOL_DESIRED_REPLICAS.series}{workers})", "{{role}} desired"),
         Target(f"sum by (role) ({m.POOL_READY_REPLICAS.series}{workers})", "{{role}} ready")))
    kv_usage = Panel(
        "KV cache usage", "KV blocks in use over KV blocks in the pool.",
        (Target(f"sum by (role) ({m.KV_BLOCKS_USED.series}{workers}) / "
                f"sum by (role) ({m.KV_BLOCKS_TOTAL.series}{workers})", "{{role}}"),),
        "percentunit", min=0, max=1)
    prompt_rate = Panel(
        "Prompt tokens per second", "Prompt tokens prefilled, by pool (decode prefills short "
        "prompts in place).",
        (Target(f"sum by (role) ({rate(m.PROMPT_TOKENS, workers)})", "{{role}}"),), "short")
    output_rate = Panel(
        "Output tokens per second", "Output tokens sampled, by pool (prefill samples each "
        "request's first token).",
        (Target(f"sum by (role) ({rate(m.GENERATION_TOKENS, workers)})", "{{role}}"),), "short")
    engine_steps = Panel(
        "Engine steps per second", "Engine steps that scheduled work, by pool and phase "
        "(prefill, decode, or mixed: decodes and a prefill chunk in one batch).",
        (Target(f"sum by (role, phase) ({rate(m.ENGINE_STEPS, workers)})",
                "{{role}} {{phase}}"),), "ops")
    return Dashboard(
        "splitserve-pools", "splitserve / Pools",
        "Prefill and decode pools of one SplitService: replicas, queues, KV cache, tokens.",
        m.KV_BLOCKS_TOTAL, (
            Row("Replicas", (desired, by_role(m.RUNNING_SEQUENCES, "Running sequences",
                                              "Sequences the engines run now."))),
            Row("Queues", (by_role(m.QUEUE_DEPTH, "Queue depth",
                                   "Sequences waiting to be scheduled."),
                           by_role(m.QUEUED_PROMPT_TOKENS, "Queued prompt tokens",
                                   "Prompt tokens waiting for prefill."))),
            Row("KV cache", (kv_usage, by_role(m.KV_BLOCKS_TOTAL, "KV cache blocks",
                                               "KV blocks in the pool (all replicas)."))),
            Row("Tokens", (prompt_rate, output_rate, engine_steps)),
        ))


def kv_transfer() -> Dashboard:
    s = sel()
    throughput = Panel(
        "Throughput", "KV cache bytes per second sent by prefill and received by decode.",
        (Target(f"sum by (direction) ({rate(m.KV_TRANSFER_BYTES, s)})", "{{direction}}"),),
        "Bps")
    transfers = Panel("Transfers per second", "Completed KV transfers per second (prefill side).",
                      (Target(f"sum({rate(m.KV_TRANSFER_SECONDS, s, '_count')})", "transfers"),),
                      "ops")
    latency = Panel("Transfer duration", "Duration of one request's prefill and KV push.",
                    _percentiles(m.KV_TRANSFER_SECONDS, s), "s")
    size = Panel(
        "Bytes per transfer", "Average KV bytes sent per completed transfer.",
        (Target(f'sum({rate(m.KV_TRANSFER_BYTES, sel(direction="sent"))}) / '
                f"sum({rate(m.KV_TRANSFER_SECONDS, s, '_count')})", "bytes"),), "bytes")
    failures = Panel(
        "Failures by reason", "KV transfers that failed, per second, by role and reason.",
        (Target(f"sum by (role, reason) ({rate(m.KV_TRANSFER_FAILURES, s)})",
                "{{role}} {{reason}}"),), "ops")
    timeouts = Panel(
        "Reservation timeouts", "Reservations decode freed because their KV never arrived.",
        (Target(f"sum by (role) ({rate(m.KV_RESERVATION_TIMEOUTS, s)})", "{{role}}"),), "ops")
    held = Panel("Reservations held", "KV block reservations waiting for a transfer.",
                 (Target(f"sum by (role) ({m.KV_RESERVATIONS.series}{s})", "{{role}}"),))
    return Dashboard(
        "splitserve-kv-transfer", "splitserve / KV transfer",
        "The prefill-to-decode KV cache hand-off of one SplitService.",
        m.KV_TRANSFER_BYTES, (
            Row("Volume", (throughput, transfers, size)),
            Row("Latency", (latency,)),
            Row("Failures", (failures, timeouts, held)),
        ))


def autoscaler() -> Dashboard:
    s = sel()
    desired = Panel(
        "Desired replicas", "Replicas the autoscaler wants for each pool, and the replicas "
        "the operator reports ready.",
        (Target(f"max by (pool) ({m.AUTOSCALER_DESIRED_REPLICAS.series}{s})", "{{pool}} desired"),
         Target(f"sum by (role) ({m.POOL_READY_REPLICAS.series}{sel(role=POOLS)})",
                "{{role}} ready")))

    def inputs(title: str, description: str, names: str, unit: str = "short") -> Panel:
        return Panel(title, description, (Target(
            f"max by (pool, input) ({m.AUTOSCALER_INPUT.series}{sel(input='~' + names)})",
            "{{pool}} {{input}}"),), unit)

    rates = inputs("Observed token rates", "Token rates the last decision read from Prometheus.",
                   "promptTokensPerSecond|arrivingTokensPerSecond|outputTokensPerSecond")
    latency = inputs("Observed latency", "TTFT and TPOT at the SLO percentile the last decision "
                     "read.", "ttftSeconds|tpotSeconds", "s")
    capacity = inputs("Capacity per replica", "Profiled capacity of one replica after the "
                      "correction factor learnt from observed latency.",
                      "capacityPerReplica|correctionFactor")
    predicted = Panel(
        "Predicted load", "Load the autoscaler predicts for the next interval.",
        (Target(f"max by (pool, quantity) ({m.AUTOSCALER_PREDICTED_LOAD.series}{s})",
                "{{pool}} {{quantity}}"),))
    decisions = Panel(
        "Scaling decisions", "Decisions that changed a pool within the rate window, by "
        "direction and reason.",
        (Target(f"sum by (pool, direction, reason) ({increase(m.AUTOSCALER_DECISIONS, s)})",
                "{{pool}} {{direction}} {{reason}}"),), "short")
    limited = Panel(
        "Scaling limited", "1 while a pool's scaling is held by a bound or pending pods.",
        (Target(f"max by (pool, reason) ({m.AUTOSCALER_LIMITED.series}{s})",
                "{{pool}} {{reason}}"),), min=0, max=1)
    return Dashboard(
        "splitserve-autoscaler", "splitserve / Autoscaler",
        "Inputs, predictions and decisions of the built-in P/D autoscaler.",
        m.AUTOSCALER_DESIRED_REPLICAS, (
            Row("Decisions", (desired, decisions, limited)),
            Row("Inputs", (rates, latency, capacity, predicted)),
        ))


def operator() -> Dashboard:
    s = sel()
    reconciles = Panel(
        "Reconciles", "Reconciles per second by kind and result.",
        (Target(f"sum by (kind, result) ({rate(m.RECONCILES, s)})", "{{kind}} {{result}}"),),
        "ops")
    errors = Panel(
        "Reconcile errors", "Failed reconciles per second by kind and reason.",
        (Target(f"sum by (kind, reason) ({rate(m.RECONCILE_ERRORS, s)})",
                "{{kind}} {{reason}}"),), "ops")
    latency = Panel("Reconcile duration", "Duration of one reconcile, by kind.",
                    _percentiles(m.RECONCILE_SECONDS, s, ("kind",)), "s")
    writes = Panel(
        "API writes", "Write requests the operator sent to the API server, by kind and verb "
        "(for the whole operator).",
        (Target(f"sum by (kind, verb) ({rate(m.RECONCILE_WRITES, sel(scoped=False))})",
                "{{kind}} {{verb}}"),), "ops")
    return Dashboard(
        "splitserve-operator", "splitserve / Operator",
        "Reconciles, errors, latency and API writes of the splitserve operator.",
        m.RECONCILES, (
            Row("Reconciles", (reconciles, errors)),
            Row("Latency and writes", (latency, writes)),
        ))


def all_dashboards() -> dict[str, Dashboard]:
    """File name -> dashboard."""
    boards = (service_overview(), pools(), kv_transfer(), autoscaler(), operator())
    return {f"{d.uid}.json": d for d in boards}
