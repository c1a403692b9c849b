"""Names shared by the operator, the autoscaler and the data plane: labels, conditions, reasons."""

from __future__ import annotations

from enum import StrEnum

LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_VERSION = "app.kubernetes.io/version"
LABEL_SERVICE = "splitserve.io/service"
LABEL_POOL = "splitserve.io/pool"
LABEL_ROLE = "splitserve.io/role"
# set by hand on a pod of a service to cut it off from the network (see docs/install.md)
LABEL_QUARANTINE = "splitserve.io/quarantine"

ANNOTATION_CONFIG_HASH = "splitserve.io/config-hash"
ANNOTATION_SPEC_HASH = "splitserve.io/spec-hash"

PRODUCT = "splitserve"
MANAGER = "splitserve-operator"


class Role(StrEnum):
    PREFILL = "prefill"
    DECODE = "decode"
    ROUTER = "router"


class ConditionType(StrEnum):
    READY = "Ready"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"
    SCALING_ACTIVE = "ScalingActive"
    SCALING_LIMITED = "ScalingLimited"


class Reason(StrEnum):
    """Condition reasons; each tells an on-call engineer what kind of problem it is."""

    ALL_READY = "AllReplicasReady"
    RECONCILED = "Reconciled"
    ROLLOUT_IN_PROGRESS = "RolloutInProgress"
    SCALING = "ScalingInProgress"
    PODS_NOT_READY = "PodsNotReady"
    INSUFFICIENT_GPU = "InsufficientGPU"
    UNSCHEDULABLE = "Unschedulable"
    IMAGE_PULL_FAILED = "ImagePullFailed"
    CRASH_LOOP = "CrashLoopBackOff"
    POD_START_FAILED = "PodStartFailed"
    MODEL_NOT_FOUND = "ModelNotFound"
    INVALID_POD_TEMPLATE = "InvalidPodTemplate"
    CHILDREN_MISSING = "ChildrenMissing"
    RECONCILE_FAILED = "ReconcileFailed"
    AS_NOT_ENABLED = "AutoscalingDisabled"
    AS_ACTIVE = "AutoscalerActive"
    AS_NO_METRICS = "NoMetrics"
    AS_INVALID_PROFILE = "InvalidProfile"
    AS_AT_MAX = "AtMaxReplicas"
    AS_AT_MIN = "AtMinReplicas"
    AS_PENDING_PODS = "PendingPods"
    AS_RATIO_BOUND = "RatioBound"
    AS_WITHIN_LIMITS = "WithinLimits"
    NO_PROBLEM = "AsExpected"
