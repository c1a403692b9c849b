"""The splitserve API: `SplitService` and `SplitPool` models, CRD generation, metric names."""

from splitserve.api.base import API_VERSION, GROUP, VERSION, parse_quantity
from splitserve.api.model import ModelSource, ModelSpec
from splitserve.api.network import LabelSelector, NetworkPeer, NetworkPolicySpec
from splitserve.api.pool import EngineLimits, PoolSpec, Resources, WorkerTemplate
from splitserve.api.serving import ApiKeySecret, AutoscalingSpec, KvTransferSpec, RouterSpec
from splitserve.api.splitpool import SplitPool, SplitPoolSpec, SplitPoolStatus
from splitserve.api.splitservice import SplitService, SplitServiceSpec, SplitServiceStatus
from splitserve.api.status import Condition, ReplicaCounts, ScalingDecision

__all__ = [
    "API_VERSION", "GROUP", "VERSION", "ApiKeySecret", "AutoscalingSpec", "Condition",
    "EngineLimits", "KvTransferSpec", "LabelSelector", "ModelSource", "ModelSpec",
    "NetworkPeer", "NetworkPolicySpec", "PoolSpec", "ReplicaCounts", "Resources",
    "RouterSpec", "ScalingDecision", "SplitPool", "SplitPoolSpec", "SplitPoolStatus",
    "SplitService", "SplitServiceSpec", "SplitServiceStatus", "WorkerTemplate", "parse_quantity",
]
