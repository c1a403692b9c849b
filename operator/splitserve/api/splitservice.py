"""`SplitService`: one served model as a prefill pool, a decode pool and a router."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict

from splitserve.api.base import API_VERSION, ApiModel, field
from splitserve.api.model import ModelSpec
from splitserve.api.network import NetworkPolicySpec
from splitserve.api.pool import PoolSpec, PullPolicy
from splitserve.api.serving import AutoscalingSpec, KvTransferSpec, RouterSpec
from splitserve.api.status import Condition, ReplicaCounts, ScalingDecision

KIND = "SplitService"
PLURAL = "splitservices"
DEFAULT_IMAGE = "splitserve/worker:0.1.0"
MAX_DECISIONS = 20


class SplitServiceSpec(ApiModel):
    """Desired state of a disaggregated model service."""

    model_config = ConfigDict(
        json_schema_extra={"description": "Desired state of a disaggregated model service."}
    )
    model: ModelSpec = field("The served model and where its weights are.")
    image: str = field("Data-plane image running the router and every worker role.",
                       default=DEFAULT_IMAGE, min_length=1, max_length=512)
    image_pull_policy: PullPolicy = field("Pull policy of every data-plane container.",
                                          default=PullPolicy.IF_NOT_PRESENT)
    prefill: PoolSpec = field("The prefill pool (prompt processing; sets TTFT).",
                              default_factory=PoolSpec)
    decode: PoolSpec = field("The decode pool (token generation; sets TPOT).",
                             default_factory=PoolSpec)
    router: RouterSpec = field("The OpenAI-compatible router.", default_factory=RouterSpec)
    kv_transfer: KvTransferSpec = field("KV cache transport between the pools.",
                                        default_factory=KvTransferSpec)
    autoscaling: AutoscalingSpec = field("Coordinated prefill/decode autoscaling.",
                                         default_factory=AutoscalingSpec)
    network_policy: NetworkPolicySpec = field(
        "Who may reach the workers and the router (NetworkPolicies).",
        default_factory=NetworkPolicySpec)


class SplitServiceStatus(ApiModel):
    """Observed state of a disaggregated model service."""

    observed_generation: int | None = field("Generation last reconciled.", default=None, ge=0)
    conditions: list[Condition] = field(
        "Ready, Progressing, Degraded, ScalingActive, ScalingLimited.",
        default_factory=list, max_length=16,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    prefill: ReplicaCounts = field("Prefill pool replicas.", default_factory=ReplicaCounts)
    decode: ReplicaCounts = field("Decode pool replicas.", default_factory=ReplicaCounts)
    router: ReplicaCounts = field("Router replicas.", default_factory=ReplicaCounts)
    endpoint: str = field("Where clients reach the router (host:port).", default="",
                          max_length=1024)
    last_scaling_decisions: list[ScalingDecision] = field(
        "Most recent autoscaling decisions, newest last.", default_factory=list,
        max_length=MAX_DECISIONS,
    )


class SplitService(ApiModel):
    """A model served with prefill/decode disaggregation."""

    api_version: str = field("splitserve.io/v1alpha1", default=API_VERSION)
    kind: str = field("SplitService", default=KIND)
    metadata: dict[str, Any] = field("Standard object metadata.", default_factory=dict)
    spec: SplitServiceSpec = field("Desired state.")
    status: SplitServiceStatus | None = field("Observed state.", default=None)
