"""`SplitPool`: one worker pool with a scale subresource, owned by its `SplitService`."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict

from splitserve.api.base import API_VERSION, DNS_SUBDOMAIN_PATTERN, ApiModel, field
from splitserve.api.model import ModelSpec
from splitserve.api.pool import MAX_REPLICAS, PoolRole, PullPolicy, WorkerTemplate
from splitserve.api.status import Condition

KIND = "SplitPool"
PLURAL = "splitpools"


class SplitPoolSpec(WorkerTemplate):
    """Everything one pool's Deployment is rendered from."""

    model_config = ConfigDict(
        json_schema_extra={"description": "Desired state of one worker pool."}
    )
    role: PoolRole = field("prefill or decode.")
    service: str = field("Name of the owning SplitService.", min_length=1, max_length=253,
                         pattern=DNS_SUBDOMAIN_PATTERN)
    replicas: int = field(
        "Workers in this pool; written through the scale subresource by one owner "
        "(the autoscaler, an HPA or kubectl scale).",
        default=1, ge=0, le=MAX_REPLICAS,
    )
    image: str = field("Data-plane image.", min_length=1, max_length=512)
    image_pull_policy: PullPolicy = field("Pull policy of the worker containers.",
                                          default=PullPolicy.IF_NOT_PRESENT)
    model: ModelSpec = field("The served model.")
    config_map_name: str = field("ConfigMap holding the engine configuration.", min_length=1,
                                 max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)
    config_hash: str = field("Hash of the configuration; a change rolls the workers.",
                             default="", max_length=128)
    http_port: int = field("Health, metrics and control HTTP port.", default=8080, ge=1,
                           le=65535)
    kv_port: int = field("gRPC KV transfer port.", default=50051, ge=1, le=65535)
    tls_secret_name: str | None = field("Secret with the KV transfer TLS material.",
                                        default=None, max_length=253,
                                        pattern=DNS_SUBDOMAIN_PATTERN)


class SplitPoolStatus(ApiModel):
    """Observed state of one pool."""

    observed_generation: int | None = field("Generation last reconciled.", default=None, ge=0)
    replicas: int = field("Workers that exist (scale subresource status).", default=0, ge=0)
    ready_replicas: int = field("Workers passing readiness.", default=0, ge=0)
    updated_replicas: int = field("Workers on the current template.", default=0, ge=0)
    selector: str = field("Label selector of the workers (scale subresource).", default="",
                          max_length=4096)
    conditions: list[Condition] = field(
        "Ready and Progressing of the pool.", default_factory=list, max_length=16,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


class SplitPool(ApiModel):
    """One worker pool of a SplitService; drive its size through the scale subresource."""

    api_version: str = field("splitserve.io/v1alpha1", default=API_VERSION)
    kind: str = field("SplitPool", default=KIND)
    metadata: dict[str, Any] = field("Standard object metadata.", default_factory=dict)
    spec: SplitPoolSpec = field("Desired state.")
    status: SplitPoolStatus | None = field("Observed state.", default=None)
