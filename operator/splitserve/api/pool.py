"""The specification of one worker pool (prefill or decode) inside a `SplitService`."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import ConfigDict, model_validator

from splitserve.api.base import (
    DNS_SUBDOMAIN_PATTERN,
    ApiModel,
    Quantity,
    cel,
    field,
    parse_quantity,
)

MAX_REPLICAS = 1000


class ResourceList(ApiModel):
    """Amounts of one kind of compute resource (requests or limits)."""

    model_config = ConfigDict(
        json_schema_extra={"description": "CPU, memory and ephemeral storage of one container."}
    )
    cpu: Quantity | None = field("CPU cores, e.g. `4` or `500m`.", default=None)
    memory: Quantity | None = field("Memory, e.g. `32Gi`.", default=None)
    ephemeral_storage: Quantity | None = field(
        "Ephemeral storage (container writable layer and emptyDir), e.g. `10Gi`.",
        default=None,
        alias="ephemeralStorage",
    )


_LIMIT_RULES = [
    (
        "cpu",
        "!has(self.requests) || !has(self.limits) || !has(self.requests.cpu) || "
        "!has(self.limits.cpu) || quantity(string(self.requests.cpu)).compareTo("
        "quantity(string(self.limits.cpu))) <= 0",
    ),
    (
        "memory",
        "!has(self.requests) || !has(self.limits) || !has(self.requests.memory) || "
        "!has(self.limits.memory) || quantity(string(self.requests.memory)).compareTo("
        "quantity(string(self.limits.memory))) <= 0",
    ),
]


class Resources(ApiModel):
    """Compute resources of each worker container."""

    model_config = ConfigDict(
        json_schema_extra={
            "description": "Compute resources of each worker container; GPUs are whole devices.",
            "x-kubernetes-validations": [
                cel(rule, f"resources.requests.{name} must not exceed resources.limits.{name}")
                for name, rule in _LIMIT_RULES
            ],
        }
    )
    gpus: int = field(
        "Number of `nvidia.com/gpu` devices per worker (requested and limited alike); "
        "0 runs the engine on CPU.",
        default=1,
        ge=0,
        le=16,
    )
    requests: ResourceList | None = field("Minimum resources the scheduler reserves.", default=None)
    limits: ResourceList | None = field("Maximum resources the container may use.", default=None)

    @model_validator(mode="after")
    def _requests_within_limits(self) -> Resources:
        if self.requests is None or self.limits is None:
            return self
        for name in ("cpu", "memory"):
            low, high = getattr(self.requests, name), getattr(self.limits, name)
            if low is not None and high is not None and parse_quantity(low) > parse_quantity(high):
                raise ValueError(
                    f"resources.requests.{name} must not exceed resources.limits.{name} "
                    f"({low} > {high})"
                )
        return self


class PullPolicy(StrEnum):
    ALWAYS = "Always"
    IF_NOT_PRESENT = "IfNotPresent"
    NEVER = "Never"


class TolerationOperator(StrEnum):
    EXISTS = "Exists"
    EQUAL = "Equal"


class TaintEffect(StrEnum):
    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


class Toleration(ApiModel):
    """A Kubernetes toleration, so workers can land on tainted GPU nodes."""

    model_config = ConfigDict(
        json_schema_extra={
            "description": "Tolerates a node taint (same meaning as a Pod's toleration).",
            "x-kubernetes-validations": [
                cel(
                    "self.operator != 'Exists' || !has(self.value) || self.value == ''",
                    "toleration.value must be empty when operator is Exists",
                )
            ],
        }
    )
    key: str | None = field("Taint key; empty with operator Exists matches all.", default=None,
                            max_length=316)
    operator: TolerationOperator = field("`Exists` or `Equal`.", default=TolerationOperator.EQUAL)
    value: str | None = field("Taint value matched with `Equal`.", default=None, max_length=63)
    effect: TaintEffect | None = field("Taint effect to match; empty matches all.", default=None)
    toleration_seconds: int | None = field(
        "How long a `NoExecute` taint is tolerated before eviction.", default=None, ge=0
    )

    @model_validator(mode="after")
    def _exists_has_no_value(self) -> Toleration:
        if self.operator == TolerationOperator.EXISTS and self.value:
            raise ValueError("toleration.value must be empty when operator is Exists")
        return self


class EngineLimits(ApiModel):
    """Limits of the engine in each worker of the pool."""

    model_config = ConfigDict(
        json_schema_extra={
            "description": "Batching and KV cache limits of the engine in each worker.",
            "x-kubernetes-validations": [
                cel(
                    "!has(self.kvCacheBlocks) || self.kvCacheBlocks * self.blockSize >= "
                    "self.maxBatchTokens",
                    "engine.kvCacheBlocks * engine.blockSize must hold at least "
                    "engine.maxBatchTokens tokens",
                )
            ],
        }
    )
    max_batch_tokens: int = field(
        "Most tokens (prompt chunks plus decode steps) in one engine step.",
        default=8192, ge=16, le=1_048_576,
    )
    max_running_seqs: int = field(
        "Most sequences the engine runs concurrently.", default=256, ge=1, le=4096
    )
    block_size: int = field("Tokens per KV cache block.", default=16, ge=1, le=256)
    kv_cache_blocks: int | None = field(
        "Fixed number of KV cache blocks; unset sizes the cache from kvCacheMemoryFraction.",
        default=None, ge=1, le=16_777_216,
    )
    kv_cache_memory_fraction: float = field(
        "Share of device memory left after weights that the KV cache may take when "
        "kvCacheBlocks is unset.",
        default=0.9, ge=0.05, le=0.98,
    )

    @model_validator(mode="after")
    def _cache_holds_a_batch(self) -> EngineLimits:
        if (
            self.kv_cache_blocks is not None
            and self.kv_cache_blocks * self.block_size < self.max_batch_tokens
        ):
            raise ValueError(
                "engine.kvCacheBlocks * engine.blockSize must hold at least engine.maxBatchTokens "
                f"tokens ({self.kv_cache_blocks} * {self.block_size} < {self.max_batch_tokens})"
            )
        return self


_REPLICA_RULES: list[Any] = [
    cel("self.minReplicas <= self.maxReplicas", "minReplicas must not exceed maxReplicas",
        ".minReplicas"),
    cel("self.replicas >= self.minReplicas && self.replicas <= self.maxReplicas",
        "replicas must lie within [minReplicas, maxReplicas]", ".replicas"),
]


class WorkerTemplate(ApiModel):
    """What every worker of a pool looks like: placement, resources, engine limits."""

    resources: Resources = field("Per-worker compute resources.", default_factory=Resources)
    node_selector: dict[str, str] = field(
        "Node labels a worker's node must have.", default_factory=dict, max_length=64
    )
    tolerations: list[Toleration] = field(
        "Taints the workers tolerate.", default_factory=list, max_length=64
    )
    engine: EngineLimits = field("Engine limits of each worker.", default_factory=EngineLimits)
    priority_class_name: str | None = field(
        "PriorityClass of the workers.", default=None, max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,
    )
    drain_seconds: int = field(
        "Time a leaving worker gets to finish its sequences before it is stopped.",
        default=60, ge=1, le=3600,
    )
    pod_template_override: dict[str, Any] | None = field(
        "Extra pod template fields merged over what the operator renders: `metadata.labels`, "
        "`metadata.annotations` and `spec` fields (containers and volumes merge by name). "
        "The only field that accepts fields the schema does not know; a rendered template the "
        "API server rejects marks the service Degraded with the server's message.",
        default=None,
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True, "type": "object"},
    )


class PoolSpec(WorkerTemplate):
    """One worker pool: its size bounds, placement, resources and engine limits."""

    model_config = ConfigDict(
        json_schema_extra={
            "description": "A pool of workers of one role (prefill or decode).",
            "x-kubernetes-validations": _REPLICA_RULES,
        }
    )
    replicas: int = field(
        "Initial number of workers. Seeds the pool's SplitPool when it is created; afterwards "
        "the SplitPool's scale subresource (autoscaler, HPA, kubectl scale) owns the count.",
        default=1, ge=1, le=MAX_REPLICAS,
    )
    min_replicas: int = field("Fewest workers the autoscaler may leave.", default=1, ge=1,
                              le=MAX_REPLICAS)
    max_replicas: int = field("Most workers the autoscaler may run.", default=16, ge=1,
                              le=MAX_REPLICAS)
    image: str | None = field(
        "Data-plane image for this pool; overrides spec.image.", default=None, min_length=1,
        max_length=512,
    )

    @model_validator(mode="after")
    def _replicas_within_bounds(self) -> PoolSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"minReplicas ({self.min_replicas}) must not exceed maxReplicas "
                f"({self.max_replicas})"
            )
        if not self.min_replicas <= self.replicas <= self.max_replicas:
            raise ValueError(
                f"replicas ({self.replicas}) must lie within [minReplicas, maxReplicas] = "
                f"[{self.min_replicas}, {self.max_replicas}]"
            )
        return self


PoolRole = Literal["prefill", "decode"]
