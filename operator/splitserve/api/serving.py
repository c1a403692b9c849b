"""Router, KV transfer and autoscaling sections of a `SplitService`."""

from __future__ import annotations

from enum import StrEnum

from pydantic import ConfigDict, model_validator

from splitserve.api.base import DNS_SUBDOMAIN_PATTERN, ApiModel, cel, field
from splitserve.api.pool import ResourceList


class RoutingPolicy(StrEnum):
    LEAST_LOADED = "least-loaded"
    POWER_OF_TWO = "power-of-two"
    ROUND_ROBIN = "round-robin"


class ServiceType(StrEnum):
    CLUSTER_IP = "ClusterIP"
    NODE_PORT = "NodePort"
    LOAD_BALANCER = "LoadBalancer"


class RouterResources(ApiModel):
    """Router container resources (the router needs no GPU)."""

    requests: ResourceList | None = field("Minimum resources reserved.", default=None)
    limits: ResourceList | None = field("Maximum resources used.", default=None)


class ApiKeySecret(ApiModel):
    """Where the router's accepted API keys live."""

    model_config = ConfigDict(json_schema_extra={
        "description": "A Secret in the service's namespace holding the API keys the router "
                       "accepts (one per line in one of its keys); clients send "
                       "`Authorization: Bearer <key>` on /v1/*.",
    })
    name: str = field("Name of the Secret.", max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)
    key: str = field("Key in the Secret whose value lists the accepted API keys, one per line "
                     "(blank lines and lines starting with # are ignored).",
                     default="api-keys", min_length=1, max_length=253,
                     pattern=r"^[-._a-zA-Z0-9]+$")


class RouterSpec(ApiModel):
    """The OpenAI-compatible front door."""

    model_config = ConfigDict(
        json_schema_extra={"description": "The OpenAI-compatible router in front of the pools."}
    )
    replicas: int = field("Router replicas.", default=2, ge=1, le=100)
    policy: RoutingPolicy = field(
        "How a worker is chosen: least-loaded (fewest queued tokens / most free KV), "
        "power-of-two (least loaded of two random), round-robin.",
        default=RoutingPolicy.LEAST_LOADED,
    )
    short_prompt_threshold: int = field(
        "Prompts with fewer tokens than this are prefilled in place on the decode worker "
        "instead of remotely; 0 always prefills remotely.",
        default=64, ge=0, le=1_048_576,
    )
    service_type: ServiceType = field("Type of the router's Service.",
                                      default=ServiceType.CLUSTER_IP)
    port: int = field("Port of the router's Service.", default=8000, ge=1, le=65535)
    max_retries: int = field("Retries on another worker when a worker fails.", default=2,
                             ge=0, le=10)
    resources: RouterResources = field("Router container resources.",
                                       default_factory=RouterResources)
    api_key_secret: ApiKeySecret | None = field(
        "API keys required on /v1/* (401 without one); unset serves without keys. Health and "
        "metrics endpoints stay open. Changes to the Secret apply without a restart.",
        default=None)


class Compression(StrEnum):
    NONE = "none"
    INT8 = "int8"


class KvTransferSpec(ApiModel):
    """How prefill workers ship the KV cache to decode workers."""

    model_config = ConfigDict(
        json_schema_extra={
            "description": "gRPC transport of the KV cache from prefill to decode.",
            "x-kubernetes-validations": [
                cel("self.chunkBytes <= self.maxMessageBytes",
                    "kvTransfer.chunkBytes must not exceed kvTransfer.maxMessageBytes",
                    ".chunkBytes"),
                cel("self.connectTimeoutMs <= self.transferTimeoutMs",
                    "kvTransfer.connectTimeoutMs must not exceed kvTransfer.transferTimeoutMs",
                    ".connectTimeoutMs"),
            ],
        }
    )
    port: int = field("gRPC port of every worker.", default=50051, ge=1, le=65535)
    chunk_bytes: int = field("Bytes of KV cache per streamed message.", default=1 << 20,
                             ge=4096, le=1 << 30)
    compression: Compression = field("KV cache encoding on the wire: none or int8.",
                                     default=Compression.NONE)
    tls_secret_name: str | None = field(
        "Secret (tls.crt, tls.key, ca.crt) for mutual TLS between workers; unset is plaintext.",
        default=None, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN,
    )
    max_message_bytes: int = field("Largest gRPC message accepted.", default=64 << 20,
                                   ge=1 << 20, le=1 << 30)
    connect_timeout_ms: int = field("Connection timeout.", default=2000, ge=1, le=600_000)
    transfer_timeout_ms: int = field("Deadline for one request's whole transfer.",
                                     default=30_000, ge=1, le=3_600_000)

    @model_validator(mode="after")
    def _consistent(self) -> KvTransferSpec:
        if self.chunk_bytes > self.max_message_bytes:
            raise ValueError(
                f"kvTransfer.chunkBytes ({self.chunk_bytes}) must not exceed "
                f"kvTransfer.maxMessageBytes ({self.max_message_bytes})"
            )
        if self.connect_timeout_ms > self.transfer_timeout_ms:
            raise ValueError(
                f"kvTransfer.connectTimeoutMs ({self.connect_timeout_ms}) must not exceed "
                f"kvTransfer.transferTimeoutMs ({self.transfer_timeout_ms})"
            )
        return self


class PdRatio(ApiModel):
    """Bounds on prefill replicas divided by decode replicas."""

    model_config = ConfigDict(
        json_schema_extra={
            "description": "Bounds on prefill replicas / decode replicas.",
            "x-kubernetes-validations": [
                cel("self.min <= self.max", "pdRatio.min must not exceed pdRatio.max", ".min")
            ],
        }
    )
    min: float = field("Lowest prefill/decode ratio.", default=0.0625, gt=0, le=64)
    max: float = field("Highest prefill/decode ratio.", default=16.0, gt=0, le=64)

    @model_validator(mode="after")
    def _ordered(self) -> PdRatio:
        if self.min > self.max:
            raise ValueError(f"pdRatio.min ({self.min}) must not exceed pdRatio.max ({self.max})")
        return self


class AutoscalingSpec(ApiModel):
    """The built-in coordinated prefill/decode autoscaler."""

    model_config = ConfigDict(
        json_schema_extra={
            "description": "Built-in autoscaler sizing both pools against TTFT/TPOT SLOs from "
            "Prometheus. When disabled, an HPA or KEDA may drive each SplitPool instead.",
            "x-kubernetes-validations": [
                cel("!self.enabled || has(self.prometheusUrl)",
                    "autoscaling.prometheusUrl is required when autoscaling.enabled is true",
                    ".prometheusUrl"),
            ],
        }
    )
    enabled: bool = field("Run the built-in autoscaler for this service.", default=False)
    prometheus_url: str | None = field(
        "Base URL of the Prometheus HTTP API, e.g. http://prometheus.monitoring:9090.",
        default=None, max_length=2048, pattern=r"^https?://[!-~]+$",
    )
    ttft_target_ms: int = field("Time-to-first-token SLO in milliseconds.", default=2000,
                                ge=1, le=600_000)
    tpot_target_ms: int = field("Time-per-output-token SLO in milliseconds.", default=100,
                                ge=1, le=60_000)
    percentile: float = field("Percentile at which both SLOs must hold, e.g. 95 or 99.",
                              default=95.0, ge=50, le=99.99)
    interval_seconds: int = field("Seconds between autoscaling decisions.", default=30,
                                  ge=5, le=3600)
    scale_up_stabilization_seconds: int = field(
        "Highest recommendation over this window is used when scaling up.", default=0,
        ge=0, le=3600,
    )
    scale_down_stabilization_seconds: int = field(
        "Highest recommendation over this window is used when scaling down.", default=300,
        ge=0, le=7200,
    )
    pd_ratio: PdRatio = field("Bounds on the prefill/decode replica ratio.",
                              default_factory=PdRatio)
    profile_config_map: str | None = field(
        "ConfigMap in the service's namespace whose `profile.json` key holds the capacity "
        "profile of one pool replica (the JSON `splitserve profile` writes). Default: the "
        "profile built into the operator (the small model on CPU).",
        default=None, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN,
    )

    @model_validator(mode="after")
    def _url_when_enabled(self) -> AutoscalingSpec:
        if self.enabled and not self.prometheus_url:
            raise ValueError(
                "autoscaling.prometheusUrl is required when autoscaling.enabled is true"
            )
        return self
