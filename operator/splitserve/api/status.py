"""Status types shared by `SplitService` and `SplitPool`."""

from __future__ import annotations

from enum import StrEnum

from pydantic import ConfigDict

from splitserve.api.base import ApiModel, field

REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(ApiModel):
    """One observation of the object's state (Kubernetes condition conventions)."""

    type: str = field("Ready, Progressing, Degraded, ScalingActive or ScalingLimited.",
                      min_length=1, max_length=316)
    status: ConditionStatus = field("True, False or Unknown.")
    reason: str = field("CamelCase reason a program can switch on.", min_length=1,
                        max_length=1024, pattern=REASON_PATTERN)
    message: str = field("Human-readable details.", default="", max_length=32768)
    last_transition_time: str | None = field(
        "When status last changed (RFC 3339).", default=None,
        json_schema_extra={"format": "date-time"},
    )
    observed_generation: int | None = field("Generation the condition was computed for.",
                                            default=None, ge=0)


class ReplicaCounts(ApiModel):
    """Replica counts of one pool or of the router."""

    desired_replicas: int = field("Replicas asked for.", default=0, ge=0)
    ready_replicas: int = field("Replicas passing readiness.", default=0, ge=0)
    updated_replicas: int = field("Replicas running the current template.", default=0, ge=0)
    summary: str = field("ready/desired, as shown by kubectl get.", default="0/0",
                         max_length=32)


class ScalingDecision(ApiModel):
    """One autoscaling decision and what it was based on."""

    model_config = ConfigDict(json_schema_extra={"description": "An autoscaling decision."})
    time: str = field("When it was made (RFC 3339).", json_schema_extra={"format": "date-time"})
    pool: str = field("prefill or decode.", pattern=r"^(prefill|decode)$")
    from_replicas: int = field("Replicas before.", ge=0)
    to_replicas: int = field("Replicas after.", ge=0)
    reason: str = field("Why, in words.", max_length=1024)
    inputs: dict[str, float] = field(
        "Numeric inputs of the decision (rates, latencies, predictions), by name.",
        default_factory=dict, max_length=64,
    )
