"""The one place every splitserve metric is named.

Workers, the router, the operator and the autoscaler create their collectors from these
definitions; the autoscaler's queries and the Grafana dashboards are written against the same
names. Nothing here imports a metrics library: a `Metric` is a plain description.
Every metric carries the labels `service`, `pool` and `role` (plus the extra labels listed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PREFIX = "splitserve_"
BASE_LABELS: tuple[str, ...] = ("namespace", "service", "pool", "role")

Kind = Literal["counter", "gauge", "histogram"]

# seconds; TTFT spans queueing plus prefill, so it reaches further than TPOT
TTFT_BUCKETS: tuple[float, ...] = (
    0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 20.0, 60.0,
)
TPOT_BUCKETS: tuple[float, ...] = (
    0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0,
)
TRANSFER_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
RECONCILE_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)


@dataclass(frozen=True)
class Metric:
    """Name, type, help text and label names of one metric."""

    name: str
    kind: Kind
    help: str
    extra_labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()

    @property
    def labels(self) -> tuple[str, ...]:
        return BASE_LABELS + self.extra_labels

    @property
    def series(self) -> str:
        """The name a query uses: counters gain `_total`, histograms are queried by bucket."""
        if self.kind == "counter":
            return self.name + "_total"
        return self.name


# request latency: recorded by the router alone, the one component that sees a whole request
# (workers see only their part), so the autoscaler's quantiles count each request once
TTFT_SECONDS = Metric(f"{PREFIX}time_to_first_token_seconds", "histogram",
                      "Time from request arrival to its first output token.",
                      buckets=TTFT_BUCKETS)
TPOT_SECONDS = Metric(f"{PREFIX}time_per_output_token_seconds", "histogram",
                      "Time between consecutive output tokens of one request.",
                      buckets=TPOT_BUCKETS)
E2E_SECONDS = Metric(f"{PREFIX}request_duration_seconds", "histogram",
                     "Time from request arrival to its last token.", buckets=TTFT_BUCKETS)

# engine load (workers)
QUEUE_DEPTH = Metric(f"{PREFIX}queue_depth", "gauge", "Sequences waiting to be scheduled.")
QUEUED_PROMPT_TOKENS = Metric(f"{PREFIX}queued_prompt_tokens", "gauge",
                              "Prompt tokens waiting for prefill.")
RUNNING_SEQUENCES = Metric(f"{PREFIX}running_sequences", "gauge",
                           "Sequences the engine is running now.")
KV_BLOCKS_USED = Metric(f"{PREFIX}kv_blocks_used", "gauge", "KV cache blocks in use.")
KV_BLOCKS_TOTAL = Metric(f"{PREFIX}kv_blocks_capacity", "gauge", "KV cache blocks in the pool.")
PROMPT_TOKENS = Metric(f"{PREFIX}prompt_tokens", "counter", "Prompt tokens prefilled.")
GENERATION_TOKENS = Metric(f"{PREFIX}generation_tokens", "counter", "Output tokens decoded.")
ENGINE_STEPS = Metric(f"{PREFIX}engine_steps", "counter",
                      "Engine steps that scheduled work, by phase (prefill, decode or mixed).",
                      extra_labels=("phase",))

# KV transfer (prefill sends, decode receives)
KV_TRANSFER_BYTES = Metric(f"{PREFIX}kv_transfer_bytes", "counter",
                           "KV cache bytes sent or received.", extra_labels=("direction",))
KV_TRANSFER_SECONDS = Metric(f"{PREFIX}kv_transfer_seconds", "histogram",
                             "Duration of one request's KV transfer.",
                             buckets=TRANSFER_BUCKETS)
KV_TRANSFER_FAILURES = Metric(f"{PREFIX}kv_transfer_failures", "counter",
                              "KV transfers that failed.", extra_labels=("reason",))
KV_RESERVATIONS = Metric(f"{PREFIX}kv_reservations", "gauge",
                         "KV block reservations held for incoming transfers.")
KV_RESERVATION_TIMEOUTS = Metric(f"{PREFIX}kv_reservation_timeouts", "counter",
                                 "Reservations freed because their transfer never finished.")

# router
ROUTER_REQUESTS = Metric(f"{PREFIX}router_requests", "counter", "Requests the router received.",
                         extra_labels=("endpoint", "code"))
ROUTER_ERRORS = Metric(f"{PREFIX}router_errors", "counter", "Requests that ended in an error.",
                       extra_labels=("reason",))
ROUTER_RETRIES = Metric(f"{PREFIX}router_retries", "counter",
                        "Requests retried on another worker.", extra_labels=("reason",))
ROUTER_LOCAL_PREFILL = Metric(f"{PREFIX}router_local_prefill", "counter",
                              "Requests prefilled in place on decode (short prompt or no "
                              "prefill worker).", extra_labels=("reason",))
ROUTER_INFLIGHT = Metric(f"{PREFIX}router_inflight_requests", "gauge",
                         "Requests the router is serving now.")
ROUTER_WORKERS = Metric(f"{PREFIX}router_workers", "gauge",
                        "Workers the router currently knows and considers ready.")

# autoscaler
AUTOSCALER_INPUT = Metric(f"{PREFIX}autoscaler_input", "gauge",
                          "A metric input to the last decision.", extra_labels=("input",))
AUTOSCALER_PREDICTED_LOAD = Metric(f"{PREFIX}autoscaler_predicted_load", "gauge",
                                   "Load predicted for the next interval.",
                                   extra_labels=("quantity",))
AUTOSCALER_DESIRED_REPLICAS = Metric(f"{PREFIX}autoscaler_desired_replicas", "gauge",
                                     "Replicas the autoscaler wants for the pool.")
AUTOSCALER_DECISIONS = Metric(f"{PREFIX}autoscaler_decisions", "counter",
                              "Scaling decisions that changed a pool.",
                              extra_labels=("direction", "reason"))
AUTOSCALER_LIMITED = Metric(f"{PREFIX}autoscaler_limited", "gauge",
                            "1 while scaling is limited (bounds, pending pods).",
                            extra_labels=("reason",))

# operator
RECONCILES = Metric(f"{PREFIX}reconciles", "counter", "Reconciles run.",
                    extra_labels=("kind", "result"))
RECONCILE_ERRORS = Metric(f"{PREFIX}reconcile_errors", "counter", "Reconciles that failed.",
                          extra_labels=("kind", "reason"))
RECONCILE_SECONDS = Metric(f"{PREFIX}reconcile_duration_seconds", "histogram",
                           "Duration of one reconcile.", extra_labels=("kind",),
                           buckets=RECONCILE_BUCKETS)
RECONCILE_WRITES = Metric(f"{PREFIX}reconcile_writes", "counter",
                          "Write requests the operator sent.", extra_labels=("kind", "verb"))
POOL_DESIRED_REPLICAS = Metric(f"{PREFIX}pool_desired_replicas", "gauge",
                               "Replicas the pool asks for.")
POOL_READY_REPLICAS = Metric(f"{PREFIX}pool_ready_replicas", "gauge",
                             "Replicas of the pool passing readiness.")

ALL: tuple[Metric, ...] = tuple(v for v in list(globals().values()) if isinstance(v, Metric))
