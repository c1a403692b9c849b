"""The `networkPolicy` section of a `SplitService`: who may reach the workers and the router."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import ConfigDict, Field, model_validator

from splitserve.api.base import DNS_LABEL_PATTERN, ApiModel, cel, field

DEFAULT_METRICS_NAMESPACES = ("monitoring",)
NamespaceName = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL_PATTERN)]


class SelectorOperator(StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


class SelectorRequirement(ApiModel):
    """One label requirement of a selector."""

    model_config = ConfigDict(
        json_schema_extra={
            "description": "One label requirement: key, operator and values.",
            "x-kubernetes-validations": [
                cel("self.operator in ['In', 'NotIn'] ? (has(self.values) && "
                    "size(self.values) > 0) : (!has(self.values) || size(self.values) == 0)",
                    "values must be non-empty for In and NotIn and empty for Exists and "
                    "DoesNotExist", ".values"),
            ],
        }
    )
    key: str = field("Label key.", min_length=1, max_length=317)
    operator: SelectorOperator = field("In, NotIn, Exists or DoesNotExist.")
    values: list[str] = field("Label values (In and NotIn only).", default_factory=list,
                              max_length=64)

    @model_validator(mode="after")
    def _values_fit_operator(self) -> SelectorRequirement:
        wants_values = self.operator in (SelectorOperator.IN, SelectorOperator.NOT_IN)
        if wants_values != bool(self.values):
            expected = "a non-empty list" if wants_values else "empty"
            raise ValueError(f"values must be {expected} for operator {self.operator.value} "
                             f"(key {self.key!r})")
        return self


class LabelSelector(ApiModel):
    """A Kubernetes label selector; an empty one selects everything."""

    match_labels: dict[str, str] = field("Labels that must all be present with these values.",
                                         default_factory=dict)
    match_expressions: list[SelectorRequirement] = field(
        "Requirements that must all hold.", default_factory=list, max_length=32)


class NetworkPeer(ApiModel):
    """Pods allowed to connect: those matching `podSelector` in the namespaces matching
    `namespaceSelector`."""

    model_config = ConfigDict(
        json_schema_extra={
            "description": "Sources allowed to connect: pods matching podSelector in namespaces "
            "matching namespaceSelector (only podSelector: the service's namespace; only "
            "namespaceSelector: every pod there).",
            "x-kubernetes-validations": [
                cel("has(self.namespaceSelector) || has(self.podSelector)",
                    "a routerFrom entry needs namespaceSelector, podSelector or both"),
            ],
        }
    )
    namespace_selector: LabelSelector | None = field(
        "Namespaces the sources run in (by label; every namespace carries "
        "kubernetes.io/metadata.name). Unset: the service's own namespace.", default=None)
    pod_selector: LabelSelector | None = field(
        "Source pods by label. Unset: every pod of the selected namespaces.", default=None)

    @model_validator(mode="after")
    def _something_selected(self) -> NetworkPeer:
        if self.namespace_selector is None and self.pod_selector is None:
            raise ValueError("a routerFrom entry needs namespaceSelector, podSelector or both")
        return self


class NetworkPolicySpec(ApiModel):
    """NetworkPolicies the operator renders for the service."""

    model_config = ConfigDict(
        json_schema_extra={
            "description": "NetworkPolicies of the service: the workers' gRPC/KV port is open "
            "only to the service's own pods, their metrics port also to the named namespaces, "
            "the router port to routerFrom. They take effect where the cluster's network "
            "plugin enforces NetworkPolicy."
        }
    )
    enabled: bool = field(
        "Render the NetworkPolicies (on by default: the workers' ports carry model traffic and "
        "KV cache and should not be open to every pod of the cluster).", default=True)
    metrics_namespaces: list[NamespaceName] = field(
        "Namespaces (by name) whose pods may scrape the workers' metrics port, e.g. where "
        "Prometheus runs. Empty: only the service's own pods and the nodes.",
        default_factory=lambda: list(DEFAULT_METRICS_NAMESPACES), max_length=32)
    router_from: list[NetworkPeer] = field(
        "Who may connect to the router port. Empty (the default): every source.",
        default_factory=list, max_length=32)
